"""Every case of the data-fault corpus (tests/data/fuzz, written by make_fuzz_corpus.py) through the
data layer, strict and lenient: either a DataValidationError naming the file, row and field of the
manifest, or exactly the manifest's kept / skipped counts, every row read accounted for and every
skipped row named."""

import json
import os
from pathlib import Path

import pytest

from nemo_repo.data.pipeline import PreferenceData, build_data_config
from nemo_repo.data.synthetic import build_tokenizer
from nemo_repo.data.validate import WARN_SKIPPED_FRACTION, DataValidationError
from tests.data.make_fuzz_corpus import CORPUS, MANIFEST, write_corpus

SPEC = json.loads((CORPUS / MANIFEST).read_text(encoding="utf-8"))
CASES = SPEC["cases"]
WRITTEN_BY_LIBRARIES = (".parquet", ".arrow")   # bytes depend on the pyarrow / datasets version


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """The synthetic benchmark's word-level tokenizer, once per chat template of the manifest."""
    root = tmp_path_factory.mktemp("fuzz_tokenizers")
    for name, template in SPEC["templates"].items():
        tokenizer = build_tokenizer(max_operand=9)
        tokenizer.chat_template = template
        tokenizer.save_pretrained(str(root / name))
    return {name: str(root / name) for name in SPEC["templates"]}


def source_path(spec, tmp_path: Path) -> str | None:
    """A corpus-relative path as is (the test runs in the corpus folder), or a made one."""
    if spec is None or isinstance(spec, str):
        return spec
    link = tmp_path / spec["make"]
    if spec["make"] == "symlink_loop":
        os.symlink(tmp_path / "loop_partner", link)
        os.symlink(link, tmp_path / "loop_partner")
    else:
        assert spec["make"] == "dangling_symlink"
        os.symlink(tmp_path / "deleted.jsonl", link)
    return str(link)


@pytest.mark.parametrize("mode", ["strict", "lenient"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_fault_is_named_or_counted(name, mode, tokenizers, tmp_path, monkeypatch):
    spec, expected = CASES[name], CASES[name][mode]
    monkeypatch.chdir(CORPUS)
    paths = {split: source_path(spec[split], tmp_path) for split in ("train", "validation")}
    section = {"train": paths["train"], "validation": paths["validation"],
               "tokenizer": tokenizers.get(spec["tokenizer"], spec["tokenizer"]),
               "cache_dir": str(tmp_path / "cache"), "max_length": 32, "strict": mode == "strict",
               **spec["config"]}

    def load():
        return PreferenceData(build_data_config(section), micro_batch_size=1,
                              global_batch_size=spec["global_batch_size"], reference=spec["reference"])

    if "error" in expected:
        with pytest.raises(DataValidationError) as raised:
            load()
        error, message, file = raised.value.error, str(raised.value), section[expected["split"]]
        assert (error.reason, error.file, error.row, error.field) == \
            (expected["error"], file, expected["row"], expected["field"]), message
        assert message.startswith(file) and message.endswith(f"[{expected['error']}]")
        if expected["row"] is not None:
            assert error.row_kind == expected["kind"] and f"{file}, {expected['kind']} {expected['row']}" in message
        if expected["field"] is not None:
            assert f"field '{expected['field']}'" in message
        return
    data = load()
    report = data.report.splits["train"]
    assert report.pairs_kept == data.num_pairs("train") == expected["kept"]
    assert dict(report.skipped) == expected["skipped"]
    assert report.rows_read == expected["kept"] + sum(expected["skipped"].values())   # none unaccounted
    assert len(report.errors) == sum(expected["skipped"].values())
    assert all(e.file == paths["train"] and e.row is not None for e in report.errors)
    warn = report.skipped_fraction > WARN_SKIPPED_FRACTION and spec["config"].get("max_skipped_fraction") is None
    assert bool(data.report.warnings) == warn
    assert all(paths["train"] in w and "skipped" in w for w in data.report.warnings)


def test_every_reason_of_the_data_layer_has_a_case():
    from nemo_repo.data import validate

    reasons = {value for key, value in vars(validate).items() if key.isupper() and isinstance(value, str)}
    reasons -= {"hub_unavailable",    # needs the network
                "tokenizer_error"}    # text that passes validation but not the tokenizer: test_tokenization
    covered = {outcome.get("error") for case in CASES.values() for outcome in (case["strict"], case["lenient"])}
    covered |= {reason for case in CASES.values() for reason in case["lenient"].get("skipped", {})}
    assert reasons - covered == set()


def test_the_corpus_is_what_the_script_writes(tmp_path):
    write_corpus(tmp_path / "fuzz")

    def files(root: Path) -> dict:
        return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}

    fresh, checked_in = files(tmp_path / "fuzz"), files(CORPUS)
    assert sorted(fresh) == sorted(checked_in), "run python tests/data/make_fuzz_corpus.py and commit"
    for relative, path in fresh.items():
        if not relative.endswith(WRITTEN_BY_LIBRARIES) and not relative.startswith("hf_disk"):
            assert path.read_bytes() == checked_in[relative].read_bytes(), relative
