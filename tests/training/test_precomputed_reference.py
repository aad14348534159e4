"""model.reference=precomputed end to end on the tiny synthetic task (fp32, CPU): recipes.precompute_
reference from a checkpoint (model.init_from) with a held-out validation split, then 2 training steps
on its files equal 2 steps with the frozen reference model; config errors name the problem."""

import json

import pytest
import yaml

from nemo_repo.training import checkpoint, outputs
from nemo_repo.training.config import ConfigError
from nemo_repo.training.reference import PROVENANCE_FILE
from nemo_repo.ranks import free_port
from tests.recipes.test_recipes import settings_for
from tests.training.runs import ok, records, run_module as run


def tiny(run_dir, cache_dir, *extra):
    return [f"run.dir={run_dir}", f"++data.cache_dir={cache_dir}", "recipe=tiny_cpu",
            "data.synthetic.n_train=64", "data.synthetic.n_validation=16",
            "++data.validation_fraction=0.25", "parallel.micro_batch_size=4",
            "parallel.global_batch_size=8", "train.max_steps=2", "train.eval_interval=0",
            "checkpoint.interval=0", "logging.progress=false", "logging.tensorboard=false",
            "train.final_pass=full", *extra]   # every training pair's w compared


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("precomputed")
    cache = root / "cache"
    ok(run("recipes.train", tiny(root / "pretrain", cache)))     # a checkpoint to start from
    init = checkpoint.latest_checkpoint(root / "pretrain" / "checkpoints")
    start = [f"model.init_from={init}", "checkpoint.save_final=false"]
    done = ok(run("recipes.precompute_reference", tiny(root / "unused", cache, *start, f"+out={root / 'ref'}")))
    overrides = done.stdout.strip().splitlines()[-1].split()
    ok(run("recipes.train", tiny(root / "model", cache, *start)))
    ok(run("recipes.train", tiny(root / "precomputed", cache, *start, *overrides)))
    return root, init, overrides


def test_precompute_writes_both_splits_with_sums_and_provenance(runs):
    root, init, overrides = runs
    out = root / "ref"
    rows = {split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "validation")}
    assert (len(rows["train"]), len(rows["validation"])) == (48, 16)
    assert all(r["reference_chosen"] < 0 and r["reference_rejected"] < 0 for s in rows.values() for r in s)
    record = json.loads((out / PROVENANCE_FILE).read_text())
    assert record["init_from"] == str(init.resolve()) and record["seed"] is None
    assert record["tokenize"]["max_length"] == 16 and record["pairs"] == {"train": 48, "validation": 16}
    truth = json.loads((out / "truth.json").read_text())
    held_out = {r["id"] for r in rows["validation"]}
    assert truth["validation_flipped_ids"] and set(truth["validation_flipped_ids"]) <= held_out
    assert not set(truth["flipped_ids"]) & held_out
    assert "++data.validation_fraction=0" in overrides and "model.reference=precomputed" in overrides


def test_training_on_precomputed_sums_equals_the_reference_model(runs):
    root, _, _ = runs
    config = yaml.safe_load((root / "precomputed" / "config.yaml").read_text())
    assert config["model"]["reference"] == "precomputed"
    assert config["data"]["train"] == str(root / "ref" / "train.jsonl")
    model, precomputed = (records(root / name) for name in ("model", "precomputed"))
    losses = [[r["loss"] for r in metrics if r["split"] == "train"] for metrics in (model, precomputed)]
    assert len(losses[0]) == 2 and losses[0][0] == pytest.approx(0.6931471805599453, abs=1e-6)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert losses[0][1] != pytest.approx(0.6931471805599453, abs=1e-3)   # the policy did move
    evals = [json.loads((root / name / outputs.EVAL_FILE).read_text()) for name in ("model", "precomputed")]
    assert evals[1] == pytest.approx(evals[0], rel=1e-5) and "true_label_accuracy" in evals[0]
    weights = [outputs.read_records(root / name / outputs.PAIR_WEIGHTS_FILE) for name in ("model", "precomputed")]
    assert [r["id"] for r in weights[1]] == [r["id"] for r in weights[0]]
    assert [r["w"] for r in weights[1]] == pytest.approx([r["w"] for r in weights[0]], rel=1e-5)


def test_sums_precomputed_with_other_settings_are_refused(runs):
    root, init, overrides = runs
    base = [*tiny(root / "x", root / "cache"), *overrides]
    settings_for(*base, f"model.init_from={init}")   # the settings they were computed with
    with pytest.raises(ConfigError, match=r"data\.max_length: 16 then, 12 now"):
        settings_for(*base, f"model.init_from={init}", "data.max_length=12")
    with pytest.raises(ConfigError, match=r"model\.init_from: '.*' then, None now.*run\.seed"):
        settings_for(*base)


def test_reference_setting_is_validated():
    with pytest.raises(ConfigError, match="model.reference must be one of"):
        settings_for("model.reference=frozen")
    with pytest.raises(ConfigError, match="objective 'simpo' uses no reference model"):
        settings_for("objective=simpo", "model.reference=precomputed")


def test_rows_without_sums_are_a_config_error(tmp_path):
    done = run("recipes.train", tiny(tmp_path / "run", tmp_path / "cache", "model.reference=precomputed"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "the train rows" in done.stderr and "have no reference_chosen / reference_rejected" in done.stderr


@pytest.mark.distributed
def test_rank_0_failing_to_write_ends_every_rank_with_its_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")   # +out under a regular file: rank 0 cannot create it
    torchrun = ["--nproc-per-node=2", "--nnodes=1", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
                "-m", "recipes.precompute_reference"]
    done = run("recipes.torchrun", [*torchrun, *tiny(tmp_path / "unused", tmp_path / "cache"),
                                    f"+out={blocker / 'ref'}"])
    assert done.returncode == 1, done.stderr[-5000:]
    # rank 1 does not wait in a collective: it raises rank 0's error right away
    assert f"RankZeroError: rank 0 failed: NotADirectoryError: [Errno 20] Not a directory: '{blocker / 'ref'}'" \
        in done.stderr, done.stderr[-5000:]
    assert "Connection closed by peer" not in done.stderr
