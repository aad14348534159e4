"""recipes.sweep: grid cells' overrides, per-run summary (eta errors, per-annotator flags) and the
Markdown table, on hand-made run directories (no training)."""

import json

import pytest
import yaml

from recipes import sweep

GRID = {"base": ["recipe=tiny_cpu"], "noise": {"0.3": [0.9, 0.5]}, "seeds": [1],
        "methods": {"rdpo": ["robust=rdpo", "robust.epsilon={flip_rate}"], "re": ["robust=re"]}}
TRUTH = {"flipped_ids": ["p1", "p2", "p4"],
         "annotators": {"a": {"eta_star": 0.9}, "b": {"eta_star": 0.5}}}


def test_cell_overrides_fill_the_noise_level_and_the_true_flip_rate():
    overrides = sweep.cell_overrides(GRID, "rdpo", "0.3", 7, ["train.max_steps=5"], [0.75, 0.25])
    assert overrides == ["recipe=tiny_cpu", "data.synthetic.etas=[0.9,0.5]", "robust=rdpo",
                         "robust.epsilon=0.2000", "run.seed=7", "train.max_steps=5"]
    assert sweep.expected_flip_rate([0.9, 0.5], [0.75, 0.25]) == pytest.approx(0.2)


def _run_dir(tmp_path, mode: str, weights: list[dict]):
    run = tmp_path / mode
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"robust": {"mode": mode}}))
    (run / "eval.json").write_text(json.dumps({"true_label_accuracy": 0.9}))
    (run / "reliability.json").write_text(json.dumps([{"annotator_id": "a", "eta": 0.85},
                                                      {"annotator_id": "b", "eta": 0.62}]))
    (run / "pair_weights.jsonl").write_text("".join(json.dumps(w) + "\n" for w in weights))
    return run


def test_summary_has_eta_errors_and_per_annotator_flag_precision_recall(tmp_path):
    weights = [{"id": "p0", "annotator_id": "a", "w": 0.9}, {"id": "p1", "annotator_id": "a", "w": 0.1},
               {"id": "p2", "annotator_id": "b", "w": 0.8}, {"id": "p3", "annotator_id": "b", "w": 0.3},
               {"id": "p4", "annotator_id": "b", "w": 0.2}]
    row = sweep.summarise_run(_run_dir(tmp_path, "re", weights), TRUTH)
    assert row["accuracy"] == 0.9
    assert row["eta_err/a"] == pytest.approx(-0.05) and row["eta_err/b"] == pytest.approx(0.12)
    assert row["max_eta_err"] == pytest.approx(0.12)
    assert (row["precision/a"], row["recall/a"]) == (1.0, 1.0)
    assert (row["precision/b"], row["recall/b"]) == (0.5, 0.5)   # p4 found, p3 false, p2 missed
    plain = sweep.summarise_run(_run_dir(tmp_path, "none", weights), TRUTH)
    assert plain["max_eta_err"] is None and "eta_hat/a" not in plain

    rows = [{"method": "re", "noise": "0.3", "seed": s, **row, "accuracy": acc}
            for s, acc in ((1, 0.9), (2, 0.8))]
    table = sweep.markdown(rows, ["re"], ["0.3"], ["a", "b"])
    assert "| re | 0.850 ± 0.071 |" in table
    assert "| re | 0.3 | 0.120 | -0.050 | 0.120 | 1.00 / 1.00 | 0.50 / 0.50 |" in table
