"""Readers: JSONL, JSON (a list of objects), Parquet, `datasets` folders (save_to_disk), hub names.

Each yields (row, record) in file order, where a record that cannot even be parsed is a RowError
(malformed JSON line, non-UTF-8 bytes). Rows are 1-based line numbers for JSONL and 0-based
indices for every other format (`row_kind`). A file that cannot be read at all (missing, a JSON
document that does not parse) raises DataValidationError.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from nemo_repo.data.validate import (INVALID_UTF8, MALFORMED_JSON, DataValidationError, RowError)

FORMATS = ("auto", "jsonl", "json", "parquet", "hf_disk", "hf_hub")


@dataclass(frozen=True)
class Source:
    """Where one split comes from: a path (or hub name), its format and, for `datasets`
    dictionaries and hub names, the split to take."""
    path: str
    format: str = "auto"
    split: str = "train"

    def resolved_format(self) -> str:
        if self.format != "auto":
            if self.format not in FORMATS:
                raise ValueError(f"unknown data format '{self.format}'; expected one of {FORMATS}")
            return self.format
        path = Path(self.path).expanduser()
        if path.is_dir():
            return "hf_disk"
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                return "parquet"
            if suffix == ".json":
                with open(path, "rb") as handle:
                    head = handle.read(4096).lstrip()
                return "json" if head.startswith(b"[") else "jsonl"
            return "jsonl"
        if "/" in self.path and not self.path.startswith((".", "/", "~")) and self.path.count("/") == 1:
            return "hf_hub"
        raise FileNotFoundError(f"data file '{self.path}' does not exist")

    def fingerprint(self) -> str:
        """Identity of the input for the tokenization cache: path, size and mtime of every file
        (content hashing would cost a full read of large files)."""
        fmt = self.resolved_format()
        digest = hashlib.sha256(f"{fmt}|{self.split}".encode())
        if fmt == "hf_hub":
            digest.update(self.path.encode())
            return digest.hexdigest()
        path = Path(self.path).expanduser().resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def row_kind(fmt: str) -> str:
    return "line" if fmt == "jsonl" else "index"


def read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    name = str(path)
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield line_number, RowError(name, line_number, "line", None, INVALID_UTF8,
                                            f"bytes are not UTF-8 (byte {error.start} of the line)")
                continue
            if not text.strip():
                yield line_number, None   # blank line: counted, not a row
                continue
            try:
                yield line_number, json.loads(text)
            except json.JSONDecodeError as error:
                yield line_number, RowError(name, line_number, "line", None, MALFORMED_JSON,
                                            f"not valid JSON: {error.msg} (column {error.colno})")


def read_json(path: str) -> Iterator[tuple[int, Any]]:
    name = str(path)
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DataValidationError(RowError(name, line, "line", None, INVALID_UTF8,
                                           "the JSON document has non-UTF-8 bytes")) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataValidationError(RowError(name, error.lineno, "line", None, MALFORMED_JSON,
                                           f"not valid JSON: {error.msg}")) from None
    if not isinstance(document, list):
        raise DataValidationError(RowError(name, 0, "index", None, "not_a_list",
                                           f"expected a JSON list of objects, got {type(document).__name__}"))
    yield from enumerate(document)


def read_parquet(path: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    row = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            yield row, record
            row += 1


def _dataset_rows(dataset) -> Iterator[tuple[int, Any]]:
    yield from enumerate(dataset)


def read_hf_disk(path: str, split: str) -> Iterator[tuple[int, Any]]:
    import datasets

    loaded = datasets.load_from_disk(os.path.expanduser(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise KeyError(f"{path}: split '{split}' not found; available: {sorted(loaded)}")
        loaded = loaded[split]
    return _dataset_rows(loaded)


def read_hf_hub(name: str, split: str) -> Iterator[tuple[int, Any]]:
    import datasets

    return _dataset_rows(datasets.load_dataset(name, split=split))


def read_source(source: Source) -> Iterator[tuple[int, Any]]:
    """(row, record | RowError | None for a blank JSONL line) in file order."""
    fmt = source.resolved_format()
    path = os.path.expanduser(source.path)
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "json":
        return read_json(path)
    if fmt == "parquet":
        return read_parquet(path)
    if fmt == "hf_disk":
        return read_hf_disk(path, source.split)
    return read_hf_hub(source.path, source.split)
