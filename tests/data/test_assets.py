"""Asset conversion (no network: the fetch itself is exercised by recipes/fetch_assets.py)."""

import pytest

from nemo_repo.data.assets import AssetError, convert_llamafactory_pairs, is_complete
from nemo_repo.data.validate import SplitReport, validate_records

SAMPLE = [
    {"conversations": [{"from": "human", "value": "Name a colour."}],
     "chosen": {"from": "gpt", "value": "Blue."}, "rejected": {"from": "gpt", "value": "Seven."}},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                       {"from": "human", "value": "Bye"}],
     "chosen": {"from": "gpt", "value": "Goodbye."}, "rejected": {"from": "gpt", "value": "No."}},
]


def test_llamafactory_pairs_become_valid_conversational_rows():
    rows = convert_llamafactory_pairs(SAMPLE, prefix="demo")
    assert rows[0] == {"id": "demo-00000", "prompt": [{"role": "user", "content": "Name a colour."}],
                       "chosen": [{"role": "assistant", "content": "Blue."}],
                       "rejected": [{"role": "assistant", "content": "Seven."}]}
    assert [m["role"] for m in rows[1]["prompt"]] == ["user", "assistant", "user"]
    columns = {k: k for k in ("prompt", "chosen", "rejected", "annotator_id", "id")}
    report = SplitReport()
    examples = validate_records("x", "line", enumerate(rows, 1), columns, report, strict=True)
    assert len(examples) == 2 and all(e.conversational for e in examples)


def test_conversion_errors_name_the_record_and_field():
    with pytest.raises(AssetError, match=r"record 1, field chosen.from: unknown role 'robot'"):
        convert_llamafactory_pairs([SAMPLE[0], {**SAMPLE[1], "chosen": {"from": "robot", "value": "x"}}])


def test_completion_marker(tmp_path):
    assert not is_complete(tmp_path)
    (tmp_path / ".complete").write_text("{}")
    assert is_complete(tmp_path)
