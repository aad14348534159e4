"""Every reader, both row shapes, the column mapping and format detection."""

import json

import pytest

from nemo_repo.data.readers import Source, read_source, row_kind
from nemo_repo.data.validate import DataValidationError, SplitReport, validate_records

COLUMNS = {"prompt": "question", "chosen": "good", "rejected": "bad", "annotator_id": "worker",
           "id": "uid"}
PLAIN = [{"question": "2 + 2 =", "good": " 4", "bad": " 5", "worker": 7, "uid": "a"},
         {"question": "1 + 1 =", "good": " 2", "bad": " 3", "worker": "w2", "uid": 2}]
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
CONVERSATIONAL = [
    # chosen/rejected repeat the prompt turns, no prompt column
    {"good": PROMPT + [{"role": "assistant", "content": "Hello."}],
     "bad": PROMPT + [{"role": "assistant", "content": "Go away."}]},
    # prompt as messages, responses as strings
    {"question": PROMPT, "good": "Hello.", "bad": "Go away."},
    # prompt as messages, responses as one assistant message each
    {"question": PROMPT, "good": {"role": "assistant", "content": "Hello."},
     "bad": [{"role": "assistant", "content": "Go away."}]},
]


def columns(**extra):
    return {**{k: k for k in COLUMNS}, **extra}


def write(tmp_path, fmt, rows):
    if fmt == "jsonl":
        path = tmp_path / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path = tmp_path / "pairs.json"
        path.write_text(json.dumps(rows, indent=2))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        path = tmp_path / "pairs.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets
        path = tmp_path / "pairs_ds"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


def load(path, mapping, fmt="auto", split="train"):
    source = Source(str(path), fmt, split)
    report = SplitReport()
    examples = validate_records(str(path), row_kind(source.resolved_format()), read_source(source),
                                mapping, report, strict=True)
    return source, examples, report


@pytest.mark.parametrize("fmt,detected", [("jsonl", "jsonl"), ("json", "json"),
                                          ("parquet", "parquet"), ("hf_disk", "hf_disk")])
def test_plain_rows_with_column_mapping(tmp_path, fmt, detected):
    rows = PLAIN
    if fmt in ("parquet", "hf_disk"):   # arrow columns have one type each
        rows = [dict(r, uid=str(r["uid"]), worker=w) for r, w in zip(PLAIN, (7, 12))]
    source, examples, report = load(write(tmp_path, fmt, rows), COLUMNS)
    assert source.resolved_format() == detected
    assert report.rows_read == 2 and not report.errors
    first, second = examples
    assert (first.prompt, first.chosen, first.rejected) == ("2 + 2 =", " 4", " 5")
    assert not first.conversational
    assert first.annotator_id == "7"          # int -> str
    assert second.annotator_id == ("w2" if fmt in ("jsonl", "json") else "12")
    assert (first.pair_id, second.pair_id) == ("a", "2")
    assert [e.row for e in examples] == ([1, 2] if fmt == "jsonl" else [0, 1])


@pytest.mark.parametrize("fmt", ["jsonl", "json", "hf_disk"])
def test_conversational_shapes_normalise_to_the_same_pair(tmp_path, fmt):
    rows = CONVERSATIONAL
    if fmt == "hf_disk":   # arrow needs one schema: keep the rows with message-list prompts
        rows = [{"question": PROMPT, "good": [{"role": "assistant", "content": "Hello."}],
                 "bad": [{"role": "assistant", "content": "Go away."}]}]
    _, examples, _ = load(write(tmp_path, fmt, rows), columns(prompt="question", chosen="good",
                                                             rejected="bad"))
    for example in examples:
        assert example.conversational and example.annotator_id is None
        assert example.prompt == PROMPT
        assert example.chosen == [{"role": "assistant", "content": "Hello."}]
        assert example.rejected == [{"role": "assistant", "content": "Go away."}]


@pytest.mark.parametrize("name,content,detected", [
    ("rows.json", "".join(json.dumps(r) + "\n" for r in PLAIN), "jsonl"),      # JSONL in a .json file
    ("rows.jsonl", json.dumps(PLAIN, indent=1), "json"),                       # a JSON list in .jsonl
    ("rows.txt", json.dumps(PLAIN), "json"),                                   # a one-line list
    ("rows.json", "\ufeff" + json.dumps(PLAIN[0]) + "\n", "jsonl"),            # a BOM is skipped
    ("rows.json", '{"question": \n' + "".join(json.dumps(r) + "\n" for r in PLAIN), "jsonl"),  # broken row 1
    ("rows.json", json.dumps(PLAIN[0], indent=1), "json"),                     # a pretty-printed object
])
def test_json_or_jsonl_is_detected_by_content(tmp_path, name, content, detected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert Source(str(path)).resolved_format() == detected


def test_a_bom_is_skipped_and_a_json_object_document_is_named(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in PLAIN).encode())
    _, examples, report = load(path, COLUMNS)
    assert [e.row for e in examples] == [1, 2] and not report.errors
    document = tmp_path / "object.json"
    document.write_text(json.dumps({"rows": PLAIN}, indent=1))
    with pytest.raises(DataValidationError, match=r"object.json: a JSON document must be a list"):
        load(document, COLUMNS)
    parquet = write(tmp_path, "parquet", PLAIN[:1])
    renamed = parquet.rename(tmp_path / "pairs.jsonl")     # Parquet content wins over the name
    assert Source(str(renamed)).resolved_format() == "parquet"


def test_hub_names_only_when_nothing_local_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert Source("someorg/somedata").resolved_format() == "hf_hub"
    assert Source("data/train", "hf_hub").resolved_format() == "hf_hub"     # explicit: the hub
    for missing in ("data/train", "someorg/train.jsonl", "a/b/c", "missing.jsonl", "./org/name"):
        with pytest.raises(DataValidationError, match=r"does not exist \(absolute: ") as raised:
            Source(missing).resolved_format()
        assert raised.value.error.file == missing and raised.value.error.reason == "not_found"


def test_fingerprint_changes_when_the_file_changes(tmp_path):
    path = write(tmp_path, "jsonl", PLAIN)
    before = Source(str(path)).fingerprint()
    assert Source(str(path)).fingerprint() == before
    path.write_text(path.read_text() + json.dumps(PLAIN[0] | {"uid": "z"}) + "\n")
    assert Source(str(path)).fingerprint() != before
