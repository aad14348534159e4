import json
import time

import pytest
import torch

from nemo_repo.objectives import posterior_weight
from nemo_repo.training import checkpoint, outputs
from nemo_repo.training.last_visit import LastVisits
from nemo_repo.training.distenv import distributed_env
from nemo_repo.training.metrics import METRICS_FILE, MetricsLogger


def test_metrics_jsonl_drops_records_after_the_resumed_step(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=True, total_steps=5, tensorboard=False, progress=False)
    for step in (1, 2, 3):
        logger.train_step(step, {"loss": 0.5 * step, "reward_accuracy": 1.0}, tokens=10, seconds=0.5)
    logger.log(3, "eval", {"loss": 0.1})
    logger.close()
    resumed = MetricsLogger(tmp_path, enabled=True, total_steps=5, start_step=2, tensorboard=True,
                            progress=False)
    resumed.train_step(3, {"loss": 9.0}, tokens=10, seconds=0.5)
    resumed.close()
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "train"), (3, "train")]
    assert records[-1]["loss"] == 9.0 and "time/tokens_per_s" in records[-1]
    assert any((tmp_path / "tensorboard").iterdir())


def test_disabled_logger_writes_nothing(tmp_path):
    logger = MetricsLogger(tmp_path / "run", enabled=False, total_steps=3)
    logger.train_step(1, {"loss": 1.0}, tokens=1, seconds=1.0)
    logger.close()
    assert not (tmp_path / "run").exists()


def test_throughput_covers_every_step_since_the_last_record(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=True, total_steps=7, log_interval=3, tensorboard=False,
                           progress=False)
    for step in range(1, 8):
        logger.train_step(step, {"loss": 1.0}, tokens=100 * step, seconds=0.5 * step)
    logger.close()
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 7]            # every 3 steps, and the last
    assert [r["time/tokens_per_s"] for r in records] == pytest.approx([200.0, 200.0, 200.0])
    assert [r["time/step_s"] for r in records] == pytest.approx([1.0, 2.5, 3.5])


def test_progress_bar_draws_its_last_line_once(tmp_path, capsys):
    logger = MetricsLogger(tmp_path, enabled=True, total_steps=3, tensorboard=False, progress=True)
    for step in (1, 2, 3):
        time.sleep(0.12)   # longer than tqdm's minimum redraw interval, as real steps are
        logger.train_step(step, {"loss": 0.25 * step}, tokens=8, seconds=0.1)
    logger.close()
    err = capsys.readouterr().err
    assert err.count("3/3") == 1 and "loss=0.75" in err


def test_run_outputs_follow_the_documented_formats(tmp_path):
    pairs = outputs.merge_pairs({"pair_index": torch.tensor([2, 0, 1, 2]),
                                 "annotator_index": torch.tensor([1, 0, 1, 1]),
                                 "delta": torch.tensor([0.5, 1.0, -3.0, 0.5]),
                                 "w": torch.tensor([0.25, 0.5, 0.125, 0.25])})
    assert pairs["pair_index"] == [0, 1, 2] and pairs["w"] == [0.5, 0.125, 0.25]
    outputs.write_run_outputs(tmp_path, pairs, pair_ids=["a", "b", "c"],
                              annotator_ids=["ann0", "ann1", "ann2"], eta=[0.9, 0.6, 0.8],
                              eval_metrics={"step": 4, "loss": 0.3})
    rows = [json.loads(line) for line in (tmp_path / outputs.PAIR_WEIGHTS_FILE).read_text().splitlines()]
    assert [set(r) for r in rows] == [{"id", "annotator_id", "w"}] * 3
    assert rows[1] == {"id": "b", "annotator_id": "ann1", "w": 0.125}
    reliability = json.loads((tmp_path / outputs.RELIABILITY_FILE).read_text())
    assert [r["annotator_id"] for r in reliability] == ["ann0", "ann1", "ann2"]
    assert reliability[1]["labels"] == 2 and reliability[2] == {
        "annotator_id": "ann2", "eta": 0.8, "labels": 0, "scored": 0, "mean_w": None}
    assert reliability[1]["mean_w"] == pytest.approx((rows[1]["w"] + rows[2]["w"]) / 2)
    assert json.loads((tmp_path / outputs.EVAL_FILE).read_text()) == {"step": 4, "loss": 0.3}
    without_w = {**pairs, "w": [float("nan")] * 3}
    with pytest.raises(ValueError, match="posterior w"):
        outputs.write_run_outputs(tmp_path, without_w, ["a", "b", "c"], ["ann0", "ann1", "ann2"],
                                  [0.9, 0.6, 0.8], {"step": 4})


def test_incomplete_checkpoints_are_ignored(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False)):
        path = tmp_path / checkpoint.step_dir_name(step)
        path.mkdir()
        if complete:
            (path / checkpoint.MARKER).write_text("{}")
    (tmp_path / f"{checkpoint.TMP_PREFIX}00000040").mkdir()
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / checkpoint.step_dir_name(20)
    assert [s for s, _ in checkpoint.complete_checkpoints(tmp_path)] == [10, 20]
    assert checkpoint.latest_checkpoint(tmp_path / "absent") is None


def test_slurm_coordinates_become_torchrun_ones():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    assert distributed_env(env) == distributed_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert env["RANK"] == "3"
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        distributed_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"})
    assert distributed_env({}).world_size == 1


def test_pairs_without_w_are_null_rows_and_left_out_of_mean_w(tmp_path):
    pairs = {"pair_index": [0, 1, 2], "annotator_index": [1, 1, 0], "w": [0.25, None, None]}
    outputs.write_run_outputs(tmp_path, pairs, ["a", "b", "c"], ["ann0", "ann1"], [0.9, 0.6], {"step": 1})
    rows = outputs.read_records(tmp_path / outputs.PAIR_WEIGHTS_FILE)
    assert [r["w"] for r in rows] == [0.25, None, None]
    reliability = json.loads((tmp_path / outputs.RELIABILITY_FILE).read_text())
    assert [(r["labels"], r["scored"], r["mean_w"]) for r in reliability] == [(1, 0, None), (2, 1, 0.25)]
    (tmp_path / "none").mkdir()
    outputs.write_run_outputs(tmp_path / "none", pairs, ["a", "b", "c"], ["ann0", "ann1"], [0.9, 0.6],
                              {"step": 1}, pair_weights=False)
    assert not (tmp_path / "none" / outputs.PAIR_WEIGHTS_FILE).exists()
    assert (tmp_path / "none" / outputs.RELIABILITY_FILE).is_file()


def test_last_visits_keep_each_pairs_latest_delta_and_survive_a_state_dict():
    visits = LastVisits(5)
    visits.record({"pair_index": torch.tensor([3, 0]), "delta": torch.tensor([1.0, -2.0])})
    visits.record({"pair_index": torch.tensor([3, 4]), "delta": torch.tensor([0.5, 0.25])})
    assert visits.visited.tolist() == [True, False, False, True, True]
    assert visits.delta[[0, 3, 4]].tolist() == [-2.0, 0.5, 0.25]
    restored = LastVisits(5)
    restored.load_state_dict(visits.state_dict())
    assert torch.equal(restored.delta, visits.delta) and torch.equal(restored.visited, visits.visited)
    eta = torch.tensor([0.9, 0.9, 0.6, 0.6, 0.3], dtype=torch.float64)
    w = posterior_weight(restored.delta, eta)
    assert w[3].item() == pytest.approx(1 / (1 + (0.4 / 0.6) * torch.exp(torch.tensor(-0.5)).item()))
    with pytest.raises(ValueError, match="saved for 5 training pairs but this run has 4"):
        LastVisits(4).load_state_dict(visits.state_dict())
