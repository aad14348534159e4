"""A file of deliberately broken rows: each gets its own named error; lenient counts are exact."""

import json
from collections import Counter

import pytest

from nemo_repo.data.readers import Source, read_source
from nemo_repo.data.validate import DataReport, DataValidationError, SplitReport, validate_records

COLUMNS = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected",
           "annotator_id": "annotator_id", "id": "id"}


def good(i, **changes):
    row = {"id": f"p{i}", "prompt": f"q{i}", "chosen": "yes", "rejected": "no", "annotator_id": "a"}
    row.update(changes)
    return json.dumps({k: v for k, v in row.items() if v is not ...}).encode()


# line -> (raw bytes, expected field, expected reason); None = a valid row / blank line
LINES = [
    (good(1), None, None),
    (b'{"prompt": "x", "chosen": ', None, "malformed_json"),
    (b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}', None, "invalid_utf8"),
    (good(4, chosen=...), "chosen", "missing_field"),
    (good(5, prompt="  "), "prompt", "empty_field"),
    (good(6, chosen=5), "chosen", "wrong_type"),
    (good(7, rejected="yes"), "rejected", "identical_responses"),
    (b"[1, 2]", None, "not_an_object"),
    (good(9, chosen=[{"role": "assistant"}]), "chosen[0].content", "bad_message"),
    (good(10, id="p1"), "id", "duplicate_id"),
    (good(11, annotator_id=...), "annotator_id", "annotator_id_partial"),
    (b"   ", None, None),
    (good(13, annotator_id=1.5), "annotator_id", "wrong_type"),
    (good(14), None, None),
    (good(15, prompt=[{"role": "user", "content": "hi"}], chosen=[{"role": "user", "content": "x"}]),
     "chosen[0].role", "bad_role"),
    (good(16, prompt=None, chosen="a"), "prompt", "missing_field"),
]


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(raw for raw, _, _ in LINES) + b"\n")
    return path


def run(path, strict, fmt="auto"):
    report = SplitReport(files=[str(path)])
    examples = validate_records(str(path), "line" if str(path).endswith("jsonl") else "index",
                                read_source(Source(str(path), fmt)), COLUMNS, report, strict)
    return examples, report


def test_every_broken_row_gets_its_own_named_error(broken):
    examples, report = run(broken, strict=False)
    expected = {line: (fld, reason) for line, (_, fld, reason) in enumerate(LINES, 1) if reason}
    got = {e.row: (e.field, e.reason) for e in report.errors}
    assert got == expected
    assert all(e.file == str(broken) and e.row_kind == "line" for e in report.errors)
    assert [e.row for e in examples] == [1, 14]
    assert report.rows_read == len(LINES) - 1 and report.blank_lines == 1
    assert report.skipped == Counter(reason for reason in (r for _, _, r in LINES) if reason)
    assert sum(report.skipped.values()) + len(examples) == report.rows_read
    text = str(report.errors[0])
    assert text.startswith(f"{broken}, line 2") and "malformed_json" in text
    assert "line 4, field 'chosen'" in str(report.errors[2])


def test_strict_raises_on_the_first_bad_row(broken):
    with pytest.raises(DataValidationError) as raised:
        run(broken, strict=True)
    assert (raised.value.error.row, raised.value.error.reason) == (2, "malformed_json")
    assert f"{broken}, line 2" in str(raised.value)


def test_report_prints_and_serialises(broken):
    _, split = run(broken, strict=False)
    report = DataReport(splits={"train": split})
    as_dict = json.loads(report.to_json())["splits"]["train"]
    assert as_dict["skipped_total"] == len(split.errors) == 13
    assert as_dict["errors"][0]["row"] == 2
    assert SplitReport.from_dict(split.to_dict()).to_dict() == split.to_dict()
    assert "13 skipped" in str(report) and "duplicate_id=1" in str(report)


def test_json_document_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'[\n {"prompt": "a",\n  "chosen": "b" "rejected": "c"}\n]')
    with pytest.raises(DataValidationError, match=r"bad.json, line 3: not valid JSON"):
        run(bad, strict=False)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[\n {"prompt": "a",\n  "chosen": "caf\xe9", "rejected": "c"}\n]')
    with pytest.raises(DataValidationError, match=r"latin.json, line 3: .*non-UTF-8"):
        run(latin, strict=False)


def test_parquet_rows_are_named_by_index(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        {"prompt": "a", "chosen": None, "rejected": "c"},
        {"prompt": "a", "chosen": "c", "rejected": "c"}]), path)
    examples, report = run(path, strict=False)
    assert len(examples) == 1
    assert [(e.row, e.row_kind, e.field, e.reason) for e in report.errors] == [
        (1, "index", "chosen", "missing_field"), (2, "index", "rejected", "identical_responses")]


def test_data_errors_travel_between_ranks_intact():
    """Rank 0 broadcasts a DataValidationError to the other ranks (pickled), which raise it as is."""
    import pickle

    from nemo_repo.data.validate import RowError, file_error
    for error in (DataValidationError(RowError("f.jsonl", 3, "line", "chosen", "missing_field", "missing")),
                  file_error("f.jsonl", "empty_file", "no rows")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is DataValidationError and copy.error == error.error and str(copy) == str(error)
    assert str(file_error("f.jsonl", "empty_file", "no rows")) == "f.jsonl: no rows [empty_file]"
