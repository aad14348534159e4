"""Every objective (dpo, ipo, simpo, cpo) x every robust mode (none, ls, rdpo, holder, ropo, re),
plus reliability.update=epoch and model.reference=precomputed, trains end to end past the first eta
record and the first checkpoint and writes every output; a subset is killed mid-run and resumed to
the same final state. Runs are tiny (64 pairs, 4 steps); the matrix shares one process."""

import json
import math
import signal
import subprocess
import sys

import pytest

from nemo_repo.training import checkpoint, outputs, plots
from tests.dist import REPO_ROOT, clean_env
from tests.training import matrix_worker
from tests.training.runs import STEPS, final_state, ok, records, tiny, train

NAMES = [*matrix_worker.matrix(), matrix_worker.PRECOMPUTED]
ETA0 = 0.9
RESUMED = ["dpo-none", "dpo-re", "simpo-none", "simpo-re"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    out, cache = root / "runs", root / "cache"
    out.mkdir()
    done = subprocess.run([sys.executable, str(REPO_ROOT / "tests/training/matrix_worker.py"), out, cache],
                          cwd=REPO_ROOT, env=clean_env(PYTHONPATH=str(REPO_ROOT)), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    return out, cache, json.loads((out / "summary.json").read_text())


def labelled_annotators(out, cache, name) -> dict:
    """pair id -> annotator id of the run's training file."""
    if name == matrix_worker.PRECOMPUTED:
        files = [out / "reference" / "train.jsonl"]
    else:
        files = list(cache.glob("synthetic/*/train.jsonl"))
    assert len(files) == 1
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    return {row["id"]: row["annotator_id"] for row in rows}


@pytest.mark.parametrize("name", NAMES)
def test_every_objective_and_robust_mode_writes_all_outputs(matrix, name):
    out, cache, summary = matrix
    assert summary[name] == 0, summary[name]
    run_dir = out / name
    assert [s for s, _ in checkpoint.complete_checkpoints(run_dir / "checkpoints")] == [2, STEPS]
    metrics = records(run_dir)
    train_records = [r for r in metrics if r["split"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and 0 <= r["w_mean"] <= 1 for r in train_records)
    assert [r["step"] for r in metrics if r["split"] == "eval"] == [2, STEPS]

    truth = labelled_annotators(out, cache, name)
    weights = [json.loads(line) for line in (run_dir / outputs.PAIR_WEIGHTS_FILE).read_text().splitlines()]
    assert sorted(r["id"] for r in weights) == sorted(truth)
    assert all(r["annotator_id"] == truth[r["id"]] and 0.0 <= r["w"] <= 1.0 for r in weights)
    reliability = json.loads((run_dir / outputs.RELIABILITY_FILE).read_text())
    assert sorted(r["annotator_id"] for r in reliability) == sorted(set(truth.values()))
    assert sum(r["labels"] for r in reliability) == len(truth)
    eta = {r["annotator_id"]: r["eta"] for r in reliability}
    eta_records = [r for r in metrics if r["split"] == "eta"]
    assert [r["step"] for r in eta_records] == [2, STEPS]
    assert {k[len("eta/"):]: v for k, v in eta_records[-1].items() if k.startswith("eta/")} == eta
    if name.split("-")[1] == "re":
        assert all(v != ETA0 for v in eta.values())          # every annotator's eta was updated
        assert all("eta_mean" in r for r in train_records)
    else:                                                    # fixed at eta0, and said so nowhere else
        assert set(eta.values()) == {ETA0} and not any("eta_mean" in r for r in train_records)
    evaluation = json.loads((run_dir / outputs.EVAL_FILE).read_text())
    assert evaluation["step"] == STEPS and math.isfinite(evaluation["loss"])
    assert sorted(p.name for p in (run_dir / plots.PLOTS_DIR).iterdir()) == \
        ["eta.png", "training.png", "w_hist.png"]


@pytest.mark.parametrize("name", RESUMED)
def test_killed_mid_run_then_resumed_ends_as_the_uninterrupted_run(matrix, tmp_path, name):
    out, cache, _ = matrix
    overrides = matrix_worker.matrix()[name]
    run_dir = tmp_path / name
    killed = train(tiny(run_dir, cache, *overrides, "debug.signal_at_step=3", "debug.signal=SIGKILL"))
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint.latest_checkpoint(run_dir / "checkpoints").name == checkpoint.step_dir_name(2)
    resumed = ok(train(tiny(run_dir, cache, *overrides)))
    assert "resumed from" in resumed.stdout
    assert final_state(run_dir) == final_state(out / name)
