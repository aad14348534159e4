"""End-to-end runs of recipes/train.py on a tiny synthetic task (fp32, CPU, deterministic):
crash + resume, preemption (exit 75), truncated checkpoints, outputs, and resuming a TP=2 / PP=2
checkpoint at TP=1. Every run has its own timeout; multi-process runs go through run_workers."""

import json
import shutil
import signal

import pytest

from nemo_repo.training import checkpoint, outputs, plots
from nemo_repo.training.signals import EXIT_REQUEUE
from tests.dist import REPO_ROOT, run_workers
from tests.training.runs import STEPS, final_state, ok, records, tiny, train

TRAIN = REPO_ROOT / "recipes" / "train.py"


def train_loss(run_dir, step):
    return next(r["loss"] for r in records(run_dir) if r["split"] == "train" and r["step"] == step)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted single-process run every other run is compared with."""
    root = tmp_path_factory.mktemp("reference")
    run_dir = root / "run"
    ok(train(tiny(run_dir, root / "cache")))
    return run_dir, root / "cache"


def test_outputs_exist_and_follow_the_formats(reference_run):
    run_dir, _ = reference_run
    assert [s for s, _ in checkpoint.complete_checkpoints(run_dir / "checkpoints")] == [2, STEPS]
    rows = [json.loads(line) for line in (run_dir / outputs.PAIR_WEIGHTS_FILE).read_text().splitlines()]
    assert len(rows) == 64 and len({r["id"] for r in rows}) == 64
    assert all(set(r) == {"id", "annotator_id", "w"} and 0.0 <= r["w"] <= 1.0 for r in rows)
    reliability = json.loads((run_dir / outputs.RELIABILITY_FILE).read_text())
    assert sum(r["labels"] for r in reliability) == 64
    assert all(set(r) == {"annotator_id", "eta", "labels", "scored", "mean_w"} and 0 < r["eta"] < 1
               for r in reliability)
    evaluation = json.loads((run_dir / outputs.EVAL_FILE).read_text())
    assert evaluation["step"] == STEPS and evaluation["pairs"] == 16
    assert 0.0 <= evaluation["true_label_accuracy"] <= 1.0 and evaluation["loss"] > 0
    metrics = records(run_dir)
    assert [r["step"] for r in metrics if r["split"] == "train"] == list(range(1, STEPS + 1))
    assert [r["step"] for r in metrics if r["split"] == "eval"] == [2, STEPS]
    assert sorted(p.name for p in (run_dir / plots.PLOTS_DIR).iterdir()) == \
        ["eta.png", "training.png", "w_hist.png"]
    eta = [r for r in metrics if r["split"] == "eta"][-1]
    assert {k[len("eta/"):]: v for k, v in eta.items() if k.startswith("eta/")} == \
        {r["annotator_id"]: r["eta"] for r in reliability}


@pytest.fixture(scope="module")
def last_visit_run(reference_run):
    """The reference run's training with pair_weights.jsonl from the last-visit Deltas."""
    _, cache = reference_run
    run_dir = cache.parent / "last_visit"
    ok(train(tiny(run_dir, cache, "train.final_pass=last_visit")))
    return run_dir, cache


@pytest.mark.parametrize("final_pass", ["full", "last_visit"])
def test_sigkill_then_resume_matches_the_uninterrupted_run(request, tmp_path, final_pass):
    """Killed mid-epoch (step 3 of 8 per epoch): with last_visit, the Deltas of the steps before
    the checkpoint come back from it (pair_weights.jsonl is part of the final state)."""
    reference, cache = request.getfixturevalue("reference_run" if final_pass == "full" else "last_visit_run")
    run_dir = tmp_path / "run"
    killed = train(tiny(run_dir, cache, "debug.signal_at_step=3", "debug.signal=SIGKILL",
                        f"train.final_pass={final_pass}"))
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint.latest_checkpoint(run_dir / "checkpoints").name == checkpoint.step_dir_name(2)
    resumed = ok(train(tiny(run_dir, cache, f"train.final_pass={final_pass}")))
    assert "resumed from" in resumed.stdout and checkpoint.step_dir_name(2) in resumed.stdout
    assert final_state(run_dir) == final_state(reference)


def test_sigterm_saves_and_exits_75_and_a_truncated_checkpoint_is_skipped(reference_run, tmp_path):
    reference, cache = reference_run
    run_dir = tmp_path / "run"
    stopped = train(tiny(run_dir, cache, "debug.signal_at_step=3", "debug.signal=SIGTERM"))
    assert stopped.returncode == EXIT_REQUEUE, stopped.stderr[-3000:]
    latest = checkpoint.latest_checkpoint(run_dir / "checkpoints")
    assert latest.name == checkpoint.step_dir_name(3) and (latest / checkpoint.MARKER).is_file()
    # a later save that died half way: copied files, no marker -> must be ignored
    truncated = run_dir / "checkpoints" / checkpoint.step_dir_name(4)
    shutil.copytree(latest, truncated)
    (truncated / checkpoint.MARKER).unlink()
    resumed = ok(train(tiny(run_dir, cache)))
    assert checkpoint.step_dir_name(3) in resumed.stdout
    assert final_state(run_dir) == final_state(reference)


def truncate_largest_shard(step_dir):
    shard = max(step_dir.glob("*.distcp"), key=lambda path: path.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def test_a_damaged_newest_checkpoint_is_skipped_named_and_set_aside(reference_run, tmp_path):
    reference, cache = reference_run
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    newest = run_dir / "checkpoints" / checkpoint.step_dir_name(STEPS)
    truncate_largest_shard(newest)   # marker present, a shard cut in half
    resumed = ok(train(tiny(run_dir, cache)))
    skipped = [line for line in resumed.stdout.splitlines() if "does not load" in line]
    assert len(skipped) == 1 and str(newest) in skipped[0] and "Error" in skipped[0], resumed.stdout
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert f"resumed from {run_dir / 'checkpoints' / checkpoint.step_dir_name(2)}" in resumed.stdout
    assert (run_dir / "checkpoints" / f"{checkpoint.DAMAGED_PREFIX}{STEPS:08d}").is_dir()
    assert [s for s, _ in checkpoint.complete_checkpoints(run_dir / "checkpoints")] == [2, STEPS]
    assert final_state(run_dir) == final_state(reference)


@pytest.mark.distributed
def test_two_ranks_agree_to_skip_a_damaged_checkpoint(reference_run, tmp_path):
    reference, cache = reference_run
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", run_dir / "checkpoints")
    truncate_largest_shard(run_dir / "checkpoints" / checkpoint.step_dir_name(STEPS))
    done = run_workers(TRAIN, 2, tiny(run_dir, cache), timeout=150)   # DP=2 resumes a DP=1 checkpoint
    assert done.stdout.count("does not load") == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"resumed from {run_dir / 'checkpoints' / checkpoint.step_dir_name(2)}" in done.stdout
    assert [s for s, _ in checkpoint.complete_checkpoints(run_dir / "checkpoints")] == [2, STEPS]
    assert (run_dir / "checkpoints" / f"{checkpoint.DAMAGED_PREFIX}{STEPS:08d}").is_dir()


def test_when_no_complete_checkpoint_loads_the_run_stops_naming_each(reference_run, tmp_path):
    reference, cache = reference_run
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", run_dir / "checkpoints")
    for step in (2, STEPS):
        truncate_largest_shard(run_dir / "checkpoints" / checkpoint.step_dir_name(step))
    failed = train(tiny(run_dir, cache))
    assert failed.returncode == 1, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("checkpoint error: no checkpoint under") and "Traceback" not in failed.stderr
    assert checkpoint.step_dir_name(STEPS) in message and checkpoint.step_dir_name(2) in message


@pytest.mark.distributed
@pytest.mark.parametrize("layout", ["parallel.tensor_model_parallel_size=2",
                                    "parallel.pipeline_model_parallel_size=2"])
def test_a_tp2_or_pp2_checkpoint_resumes_at_tp1_with_the_same_next_step_loss(reference_run, tmp_path,
                                                                               layout):
    reference, cache = reference_run
    run_dir = tmp_path / "run"
    run_workers(TRAIN, 2, tiny(run_dir, cache, layout, "train.stop_at_step=2"), timeout=150)
    assert checkpoint.latest_checkpoint(run_dir / "checkpoints").name == checkpoint.step_dir_name(2)
    for step in (1, 2):
        assert train_loss(run_dir, step) == pytest.approx(train_loss(reference, step), rel=1e-5)
    ok(train(tiny(run_dir, cache)))
    assert train_loss(run_dir, 3) == pytest.approx(train_loss(reference, 3), rel=1e-5)
    reliability = json.loads((run_dir / outputs.RELIABILITY_FILE).read_text())
    expected = json.loads((reference / outputs.RELIABILITY_FILE).read_text())
    assert [r["eta"] for r in reliability] == pytest.approx([r["eta"] for r in expected], abs=1e-6)


def test_epoch_update_moves_eta_only_when_an_epoch_ends(tmp_path):
    run_dir = tmp_path / "run"
    ok(train(tiny(run_dir, tmp_path / "cache", "data.synthetic.n_train=16", "reliability.update=epoch",
                  "logging.eta_log_interval=1", "checkpoint.interval=0")))
    eta = {r["step"]: {k: v for k, v in r.items() if k.startswith("eta/")}
           for r in records(run_dir) if r["split"] == "eta"}
    assert set(eta[1].values()) == {0.9}                    # 16 pairs / 8 per step: epochs end at 2, 4
    assert eta[2] != eta[1] and eta[3] == eta[2] and eta[4] != eta[3]
