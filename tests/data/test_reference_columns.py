"""Precomputed reference sums in the rows (reference_chosen / reference_rejected): validation errors
name file/row/field; the sums survive tokenization, the cache, the held-out split and collation."""

import json
from collections import Counter

import pytest
import torch

from nemo_repo.data.pipeline import PreferenceData, build_data_config, materialize_synthetic
from nemo_repo.data.readers import Source, read_source
from nemo_repo.data.validate import DataValidationError, SplitReport, validate_records
from nemo_repo.data.validate import FIELDS

COLUMNS = {**{name: name for name in FIELDS}, "reference_chosen": "ref_c", "reference_rejected": "ref_r"}


def row(i, **changes):
    values = {"id": f"p{i}", "prompt": "q", "chosen": "yes", "rejected": "no", "ref_c": -1.5, "ref_r": -2}
    values.update(changes)
    return json.dumps({k: v for k, v in values.items() if v is not ...})


# line -> (row, expected field, expected reason); None = valid
LINES = [
    (row(1), None, None),
    (row(2, ref_c=0.25), "ref_c", "bad_reference"),
    (row(3, ref_r=float("nan")), "ref_r", "bad_reference"),
    (row(4, ref_c=float("-inf")), "ref_c", "bad_reference"),
    (row(5, ref_c="-1.0"), "ref_c", "wrong_type"),
    (row(6, ref_r=True), "ref_r", "wrong_type"),
    (row(7, ref_r=...), "ref_r", "reference_partial"),
    (row(8, ref_c=None), "ref_c", "reference_partial"),
    (row(9, ref_c=..., ref_r=...), "ref_c", "reference_partial"),   # the other rows have sums
    (row(10, ref_c=0, ref_r=-1e-3), None, None),
]


def validate_file(path, strict):
    report = SplitReport(files=[str(path)])
    kept = validate_records(str(path), "line", read_source(Source(str(path))), COLUMNS, report, strict,
                            reference=True)
    return kept, report


def test_bad_reference_values_are_named_by_file_row_and_field(tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_text("\n".join(line for line, _, _ in LINES) + "\n")
    kept, report = validate_file(path, strict=False)
    expected = {n: (field, reason) for n, (_, field, reason) in enumerate(LINES, 1) if reason}
    assert {e.row: (e.field, e.reason) for e in report.errors} == expected
    assert [(e.row, e.reference_chosen, e.reference_rejected) for e in kept] == [(1, -1.5, -2.0), (10, 0.0, -1e-3)]
    assert report.skipped == Counter(reason for _, _, reason in LINES if reason)
    with pytest.raises(DataValidationError) as raised:
        validate_file(path, strict=True)
    assert str(raised.value).startswith(f"{path}, line 2, field 'ref_c': 0.25 > 0")


def test_rows_without_any_reference_sums_are_fine(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text("\n".join(row(i, ref_c=..., ref_r=...) for i in range(3)) + "\n")
    kept, report = validate_file(path, strict=True)
    assert len(kept) == 3 and all(e.reference_chosen is None and e.reference_rejected is None for e in kept)


def test_reference_columns_are_ignored_unless_the_run_reads_them(tmp_path):
    path = tmp_path / "half.jsonl"    # sums on lines 2, 4, 6 only
    path.write_text("\n".join(row(i) if i % 2 else row(i, ref_c=..., ref_r=...) for i in range(6)) + "\n")
    report = SplitReport(files=[str(path)])
    kept = validate_records(str(path), "line", read_source(Source(str(path))), COLUMNS, report, strict=True)
    assert len(kept) == 6 and all(e.reference_chosen is None for e in kept)   # model.reference=model
    kept, report = validate_file(path, strict=False)                          # precomputed
    assert [e.row for e in kept] == [2, 4, 6] and report.skipped == {"reference_partial": 3}
    assert str(report.errors[0]).startswith(f"{path}, line 1, field 'ref_c': missing, while 3 of 6")


@pytest.fixture(scope="module")
def with_references(tmp_path_factory):
    """The synthetic benchmark with made-up reference sums (pair i: -i/8, -i/8 - 1) in both splits."""
    root = tmp_path_factory.mktemp("refs")
    base = materialize_synthetic(build_data_config(
        {"synthetic": {"n_train": 40, "n_validation": 8, "seed": 3}, "cache_dir": str(root / "cache")}))
    sums = {}
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in open(getattr(base, split))]
        for i, r in enumerate(rows):
            r["reference_chosen"], r["reference_rejected"] = -i / 8, -i / 8 - 1
            sums[r["id"]] = (r["reference_chosen"], r["reference_rejected"])
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, base.tokenizer, sums


def load(root, tokenizer, **extra):
    section = {"train": str(root / "train.jsonl"), "tokenizer": tokenizer, "max_length": 16,
               "cache_dir": str(root / "cache"), **extra}
    if not extra.get("validation_fraction"):
        section["validation"] = str(root / "validation.jsonl")
    return PreferenceData(build_data_config(section), micro_batch_size=4, global_batch_size=8,
                          reference=True)


def assert_batch_carries(data, split, batch, sums):
    ids = [data.pair_ids(split)[i] for i in batch.pair_index.tolist()]
    assert batch.reference_chosen.dtype == torch.float32
    assert batch.reference_chosen.tolist() == [sums[i][0] for i in ids]
    assert batch.reference_rejected.tolist() == [sums[i][1] for i in ids]


@pytest.mark.parametrize("packing", [False, True])
def test_reference_sums_survive_tokenization_cache_and_collation(with_references, packing):
    root, tokenizer, sums = with_references
    for attempt in range(2):   # the second build loads the tokenized cache
        data = load(root, tokenizer, packing=packing)
        assert data.report.batching["cache"]["train"] == ("miss" if attempt == 0 and not packing else "hit")
        assert data.has_reference("train") and data.has_reference("validation")
        for batch in data.sampler.next_step():
            assert_batch_carries(data, "train", batch, sums)
        for batch in data.eval_batches("validation"):
            assert_batch_carries(data, "validation", batch, sums)


def test_held_out_validation_keeps_its_sums(with_references):
    root, tokenizer, sums = with_references
    data = load(root, tokenizer, validation_fraction=0.25)
    assert data.num_pairs("validation") == 10 and data.has_reference("validation")
    for batch in data.eval_batches("validation"):
        assert_batch_carries(data, "validation", batch, sums)


def test_data_without_sums_has_no_reference(with_references):
    root, tokenizer, _ = with_references
    base = materialize_synthetic(build_data_config(
        {"synthetic": {"n_train": 40, "n_validation": 8, "seed": 3}, "cache_dir": str(root / "cache")}))
    data = PreferenceData(base, micro_batch_size=4, global_batch_size=8)
    assert not data.has_reference("train")
    assert data.sampler.next_step()[0].reference_chosen is None
