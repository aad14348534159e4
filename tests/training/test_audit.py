import json

import yaml

from nemo_repo.training import outputs
from nemo_repo.training.audit import AUDIT_FILE, render_audit
from recipes import audit as audit_cli


def fake_run(run_dir, w=(0.9, 0.02, 0.4)):
    run_dir.mkdir()
    outputs.write_json(run_dir / outputs.RELIABILITY_FILE, [
        {"annotator_id": "alice", "eta": 0.93, "labels": 1, "mean_w": 0.9},
        {"annotator_id": "bob", "eta": 0.41, "labels": 2, "mean_w": 0.21}])
    outputs.write_records(run_dir / outputs.PAIR_WEIGHTS_FILE, [
        {"id": "p0", "annotator_id": "alice", "w": w[0]}, {"id": "pairs.jsonl:2", "annotator_id": "bob", "w": w[1]},
        {"id": "p2", "annotator_id": "bob", "w": w[2]}])
    return run_dir


def test_annotators_least_reliable_first_and_lowest_w_labels_with_texts(tmp_path):
    data = tmp_path / "pairs.jsonl"   # row 2 has no id: matched as "<file name>:<line>"
    data.write_text(json.dumps({"id": "p0", "prompt": "1 + 1 =", "chosen": "2", "rejected": "3"}) + "\n"
                    + json.dumps({"prompt": "2 + 2 =", "chosen": "5", "rejected": "4"}) + "\n"
                    + json.dumps({"id": "p2", "prompt": [{"role": "user", "content": "x" * 100}],
                                  "chosen": "a", "rejected": "b"}) + "\n")
    run_dir = fake_run(tmp_path / "run")
    assert audit_cli.main([str(run_dir), "--data", str(data), "--top", "2", "--width", "20"]) == 0
    lines = (run_dir / AUDIT_FILE).read_text().splitlines()
    assert "2 of 3 training labels have w < 0.5" in lines[2]
    annotators = [line for line in lines if line.startswith("| alice") or line.startswith("| bob")]
    assert annotators == ["| bob | 0.410 | 2 | 0.210 | 2 (100.0%) |",
                          "| alice | 0.930 | 1 | 0.900 | 0 (0.0%) |"]
    pairs = [line for line in lines if line.startswith("| p")]
    assert pairs == ["| pairs.jsonl:2 | bob | 0.0200 | 2 + 2 = | 5 | 4 |",
                     "| p2 | bob | 0.4000 | user: " + "x" * 13 + "… | a | b |"]


def test_the_config_points_at_the_data_and_a_non_re_run_is_refused(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"id": "p0", "prompt": "1 + 1 =", "chosen": "2", "rejected": "3"}) + "\n")
    run_dir = fake_run(tmp_path / "run")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"data": {"train": str(data), "tokenizer": "tok"}}))
    assert "| p0 | alice | 0.9000 | 1 + 1 = | 2 | 3 |" in render_audit(run_dir, audit_cli._texts(run_dir, None))
    plain = fake_run(tmp_path / "plain", w=(None, None, None))
    assert audit_cli.main([str(plain)]) == 2
    assert "did not use robust=re" in capsys.readouterr().err
