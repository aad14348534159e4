import json

import pytest

from nemo_repo.data.multipref import MultiPrefError, flatten_record
from recipes import prepare_data


def record(normal=("A-is-clearly-better", "Tie"), expert=("B-is-slightly-better",)):
    def annotations(prefs, prefix):
        return [{"evaluator": f"{prefix}{i}", "overall_pref": p, "helpful_pref": "Tie"}
                for i, p in enumerate(prefs)]
    return {"comparison_id": "c1", "prompt_id": "p1", "text": "Name a prime.", "completion_a": "7",
            "completion_b": "8", "normal_worker_annotations": annotations(normal, "worker"),
            "expert_worker_annotations": annotations(expert, "expert")}


def test_each_non_tie_judgment_becomes_a_row_of_its_annotator():
    rows, counts = flatten_record(record(), "f.jsonl, line 1")
    assert rows == [
        {"id": "c1:worker0", "prompt": "Name a prime.", "chosen": "7", "rejected": "8", "annotator_id": "worker0"},
        {"id": "c1:expert0", "prompt": "Name a prime.", "chosen": "8", "rejected": "7", "annotator_id": "expert0"}]
    assert counts == {"rows": 2, "tie": 1}
    rows, _ = flatten_record(record(), "f.jsonl, line 1", groups=("expert",))
    assert [r["annotator_id"] for r in rows] == ["expert0"]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("completion_b"), "line 3, field 'completion_b'"),
    (lambda r: r["normal_worker_annotations"][1].update(overall_pref="A-wins"),
     "line 3, field 'normal_worker_annotations[1].overall_pref': unknown value 'A-wins'"),
    (lambda r: r["expert_worker_annotations"][0].pop("evaluator"),
     "line 3, field 'expert_worker_annotations[0]', field 'evaluator'"),
])
def test_malformed_records_name_the_line_and_field(change, message):
    bad = record()
    change(bad)
    with pytest.raises(MultiPrefError, match=message.replace("[", r"\[").replace("]", r"\]")):
        flatten_record(bad, "f.jsonl, line 3")


def test_the_cli_flattens_a_file_and_reports_bad_lines_without_partial_output(tmp_path, capsys):
    source, out = tmp_path / "MultiPref-Train.jsonl", tmp_path / "out" / "train.jsonl"
    source.write_text(json.dumps(record()) + "\n\n" + json.dumps(record(normal=("Tie", "Tie"))) + "\n")
    assert prepare_data.main(["multipref", "--input", str(source), "--out", str(out)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == \
        ["c1:worker0", "c1:expert0", "c1:expert0"]
    assert "3 rows from 2 comparisons (3 tie judgments skipped)" in capsys.readouterr().out
    source.write_bytes(source.read_bytes() + b"{not json\n")
    out.unlink()
    assert prepare_data.main(["multipref", "--input", str(source), "--out", str(out)]) == 1
    assert "line 4: malformed JSON" in capsys.readouterr().err
    assert not out.exists() and not list(out.parent.glob("*.tmp"))
