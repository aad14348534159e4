import math

from recipes import demo

TRUTH = {"flipped_ids": ["p1", "p2"],
         "annotators": {"a": {"num_labels": 3, "eta_star": 0.9, "realised_eta": 2 / 3},
                        "b": {"num_labels": 1, "eta_star": 0.5, "realised_eta": 0.0}}}
WEIGHTS = [{"id": "p0", "w": 0.9, "annotator_id": "a"}, {"id": "p1", "w": 0.2, "annotator_id": "a"},
           {"id": "p2", "w": 0.7, "annotator_id": "b"}, {"id": "p3", "w": 0.4, "annotator_id": "a"}]


def test_detection_scores_the_w_below_half_rule():
    assert demo.detection(WEIGHTS, {"p1", "p2"}) == {"flagged": 2, "precision": 0.5, "recall": 0.5}
    assert math.isnan(demo.detection([{"id": "p0", "w": 0.9}], {"p1"})["precision"])  # none flagged


def test_report_tables_hold_the_errors_accuracies_and_detection():
    reliability = {"a": {"eta": 0.87}, "b": {"eta": 0.56}}
    runs = {"re_dpo": ({"true_label_accuracy": 0.75, "loss": 0.5}, reliability, WEIGHTS),
            "dpo": ({"true_label_accuracy": 0.5, "loss": 0.6}, {}, [])}
    rows = [line.split() for line in demo.report(TRUTH, runs).splitlines()]
    assert ["a", "3", "0.900", "0.667", "0.870", "0.030"] in rows
    assert ["b", "1", "0.500", "0.000", "0.560", "0.060"] in rows
    assert ["max", "|eta_hat", "-", "eta*|", "=", "0.060", "(goal", "<=", "0.05)"] in rows
    assert ["re_dpo", "accuracy", "0.750", "loss", "0.5000"] in rows
    assert ["re_dpo", "flagged", "2", "precision", "0.500", "recall", "0.500"] in rows
    assert ["RE-DPO", "-", "DPO", "=", "+25.0", "points"] in rows
    assert ["a", "flagged", "2", "precision", "0.500", "recall", "1.000"] in rows   # p1 found, p3 not flipped
    assert ["b", "flagged", "0", "precision", "nan", "recall", "0.000"] in rows     # p2 missed
    for section in ("(a) ", "(b) ", "(c) "):
        assert any(line.startswith(section) for line in demo.report(TRUTH, runs).splitlines())
