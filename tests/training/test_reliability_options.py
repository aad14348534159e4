"""The reliability options beyond the paper end to end (one tiny run, one process): the running
average, holdout scoring, the calibrated E-step and the final refit train, record the E-step
scale and write every output."""

import json

from nemo_repo.training import outputs
from tests.training.runs import ok, records, tiny, train


def test_average_holdout_calibrated_refit_run_writes_outputs(tmp_path):
    run_dir = tmp_path / "run"
    ok(train(tiny(run_dir, tmp_path / "cache", "reliability.update=average",
                  "reliability.estimate_from=holdout", "reliability.holdout_fraction=0.5",
                  "reliability.calibrate=true", "reliability.final_refit=true",
                  "checkpoint.interval=0"), timeout=300))
    train_records = [r for r in records(run_dir) if r["split"] == "train"]
    scales = [r["e_step_scale"] for r in train_records]
    assert len(scales) == 4 and all(0.1 <= s <= 50.0 for s in scales) and scales[-1] != 1.0
    reliability = json.loads((run_dir / outputs.RELIABILITY_FILE).read_text())
    assert len(reliability) == 4 and all(0.0 < r["eta"] < 1.0 and r["eta"] != 0.9 for r in reliability)
    weights = (run_dir / outputs.PAIR_WEIGHTS_FILE).read_text().splitlines()
    assert len(weights) == 64 and all(0.0 <= json.loads(line)["w"] <= 1.0 for line in weights)
