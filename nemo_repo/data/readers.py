"""Readers: JSONL, JSON (a list of objects), Parquet, `datasets` folders (save_to_disk), hub names.

Each yields (row, record) in file order, where a record that cannot even be parsed is a RowError
(malformed JSON line, non-UTF-8 bytes, nesting too deep to parse, a key twice in one object). Rows
are 1-based line numbers for JSONL and 0-based indices for every other format (`row_kind`). A UTF-8 byte order mark is
skipped. A file that cannot be read at all (missing, unreadable, not a supported format, a JSON
document that does not parse, a truncated Parquet file, a missing split) raises
DataValidationError naming it.

`data.format: auto` decides by what is there, not by the name alone:
* a local path that exists: a folder written by `datasets.save_to_disk` -> hf_disk (any other
  folder is an error); a file starting with Parquet's magic bytes -> parquet (a `.parquet` file
  without them is an error); `.csv` / `.tsv` / compressed files are errors (convert them); any
  other file is JSON or JSONL by its content (`_json_or_jsonl`);
* a path that does not exist is a hub dataset name only when it looks like one (`owner/name`,
  no data-file suffix, and `owner` is not a local folder); anything else fails at once, naming
  the path. `data.format: hf_hub` always means the hub.
"""

import codecs
import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from nemo_repo.data.validate import (BLANK_LINE, CORRUPT_FILE, DUPLICATE_KEY, HUB_UNAVAILABLE, INVALID_UTF8,
                                     MALFORMED_JSON, NESTING_TOO_DEEP, NOT_FOUND, SPLIT_NOT_FOUND,
                                     UNREADABLE, UNSUPPORTED_FORMAT, DataValidationError, RowError,
                                     file_error)

FORMATS = ("auto", "jsonl", "json", "parquet", "hf_disk", "hf_hub")
PARQUET_MAGIC = b"PAR1"
UNSUPPORTED_SUFFIXES = {".csv": "CSV", ".tsv": "TSV", ".gz": "compressed", ".bz2": "compressed",
                        ".xz": "compressed", ".zst": "compressed", ".zip": "compressed"}
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow", ".txt", *UNSUPPORTED_SUFFIXES)
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_DATASETS_MARKERS = ("dataset_dict.json", "state.json")   # save_to_disk of a DatasetDict / Dataset


def looks_like_hub_name(name: str) -> bool:
    """`owner/name`, without a data-file suffix, whose `owner` is not a local folder."""
    return (bool(_HUB_NAME.fullmatch(name)) and not name.lower().endswith(DATA_SUFFIXES)
            and not Path(name.split("/")[0]).is_dir())


def _local_kind(name: str) -> str:
    """'dir' or 'file' for an existing path; DataValidationError naming it otherwise."""
    path = Path(name).expanduser()
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if not os.path.lexists(path):
            raise file_error(name, NOT_FOUND, f"does not exist (absolute: {path.absolute()})") from None
        what = ("a symlink loop" if error.errno == errno.ELOOP else
                "a symlink to a missing file" if error.errno == errno.ENOENT else error.strerror)
        raise file_error(name, UNREADABLE, f"cannot be read: {what}") from None
    if stat.S_ISDIR(mode):
        return "dir"
    if not stat.S_ISREG(mode):
        raise file_error(name, UNREADABLE, "not a regular file")
    return "file"


def _first_lines(path: Path, count: int) -> list[bytes]:
    """The first `count` non-blank lines (a BOM stripped from the first line of the file)."""
    lines = []
    with _open(path) as handle:
        for number, raw in enumerate(handle):
            raw = raw.removeprefix(codecs.BOM_UTF8) if number == 0 else raw
            if raw.strip():
                lines.append(raw)
                if len(lines) == count:
                    break
    return lines


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
        return True
    except (ValueError, RecursionError):
        return False


def _json_or_jsonl(path: Path) -> str:
    """JSON Lines when the first non-blank line is a JSON value by itself (except a one-line file
    holding a list: a JSON document) or, when it is not, the second one is (a JSONL file whose
    first row is broken); otherwise a JSON document spread over lines."""
    lines = _first_lines(path, 2)
    if not lines:
        return "jsonl"   # empty: the reader counts no rows (an error)
    if _parses(lines[0]):
        return "json" if len(lines) == 1 and lines[0].lstrip().startswith(b"[") else "jsonl"
    if lines[0].lstrip()[:1] in (b"[", b"{") and not (len(lines) == 2 and _parses(lines[1])):
        return "json"
    return "jsonl"


def _file_format(name: str) -> str:
    path = Path(name).expanduser()
    with _open(path) as handle:
        magic = handle.read(len(PARQUET_MAGIC))
    suffix = path.suffix.lower()
    if magic == PARQUET_MAGIC:
        return "parquet"
    if suffix == ".parquet":
        raise file_error(name, UNSUPPORTED_FORMAT, "not a Parquet file (it does not start with the "
                         "Parquet magic bytes PAR1)")
    if suffix in UNSUPPORTED_SUFFIXES:
        raise file_error(name, UNSUPPORTED_FORMAT,
                         f"{UNSUPPORTED_SUFFIXES[suffix]} files are not read: convert it to JSONL (one "
                         f"JSON object per line) or Parquet")
    return _json_or_jsonl(path)


@dataclass(frozen=True)
class Source:
    """Where one split comes from: a path (or hub name), its format and, for `datasets`
    dictionaries and hub names, the split to take."""
    path: str
    format: str = "auto"
    split: str = "train"

    def resolved_format(self) -> str:
        """The format to read with (see the module docstring); DataValidationError when the
        path cannot be read as data."""
        if self.format not in FORMATS:
            raise ValueError(f"unknown data format '{self.format}'; expected one of {FORMATS}")
        if self.format == "hf_hub":
            return "hf_hub"
        path = Path(self.path).expanduser()
        if self.format == "auto" and not os.path.lexists(path) and looks_like_hub_name(self.path):
            return "hf_hub"
        if _local_kind(self.path) == "dir":
            if self.format not in ("auto", "hf_disk"):
                raise file_error(self.path, UNREADABLE, f"a folder, but data.format is {self.format}")
            if not any((path / marker).is_file() for marker in _DATASETS_MARKERS):
                raise file_error(self.path, UNREADABLE, "a folder, but not one written by "
                                 "datasets' save_to_disk (no dataset_dict.json or state.json): "
                                 "name a data file in it")
            return "hf_disk"
        if self.format == "hf_disk":
            raise file_error(self.path, UNREADABLE, "data.format is hf_disk, but this is a file")
        return _file_format(self.path) if self.format == "auto" else self.format

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
            stat_result = file.stat()
            digest.update(f"{file}|{stat_result.st_size}|{stat_result.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def row_kind(fmt: str) -> str:
    return "line" if fmt == "jsonl" else "index"


def _open(path):
    try:
        return open(path, "rb")
    except OSError as error:
        raise file_error(path, UNREADABLE, f"cannot be opened: {error.strerror}") from None


class _TooDeep(ValueError):
    """JSON nested deeper than the parser's recursion limit."""


class _DuplicateKey(ValueError):
    """An object with the same key twice (json.loads would silently keep the last value)."""

    def __init__(self, key: str):
        super().__init__(f"the key '{key}' appears twice in one object (which value is meant?)")
        self.key = key


_TOO_DEEP = "nested too deeply to parse (about 1000 levels of lists/objects or more)"


def _unique_keys(pairs: list) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return record


def _loads(text: str):
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _TooDeep() from None


def read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    name = str(path)
    with _open(path) as handle:
        for line_number, raw in enumerate(handle, start=1):
            if line_number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield line_number, RowError(name, line_number, "line", None, INVALID_UTF8,
                                            f"bytes are not UTF-8 (byte {error.start} of the line)")
                continue
            if not text.strip():
                yield line_number, BLANK_LINE
                continue
            try:
                yield line_number, _loads(text)
            except _TooDeep:
                yield line_number, RowError(name, line_number, "line", None, NESTING_TOO_DEEP, _TOO_DEEP)
            except _DuplicateKey as duplicate:
                yield line_number, RowError(name, line_number, "line", duplicate.key, DUPLICATE_KEY,
                                            str(duplicate))
            except json.JSONDecodeError as error:
                yield line_number, RowError(name, line_number, "line", None, MALFORMED_JSON,
                                            f"not valid JSON: {error.msg} (column {error.colno})")


def read_json(path: str) -> Iterator[tuple[int, Any]]:
    name = str(path)
    with _open(path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DataValidationError(RowError(name, line, "line", None, INVALID_UTF8,
                                           "the JSON document has non-UTF-8 bytes")) from None
    try:
        document = _loads(text)
    except _TooDeep:
        raise file_error(name, NESTING_TOO_DEEP, _TOO_DEEP) from None
    except _DuplicateKey as duplicate:
        raise file_error(name, DUPLICATE_KEY, str(duplicate)) from None
    except json.JSONDecodeError as error:
        raise DataValidationError(RowError(name, error.lineno, "line", None, MALFORMED_JSON,
                                           f"not valid JSON: {error.msg} (column {error.colno})")) from None
    if not isinstance(document, list):
        got = "an object" if isinstance(document, dict) else type(document).__name__
        raise file_error(name, UNSUPPORTED_FORMAT, f"a JSON document must be a list of row objects (or "
                         f"use JSON Lines: one object per line), got {got}")
    yield from enumerate(document)


def read_parquet(path: str) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise file_error(path, CORRUPT_FILE, f"not a readable Parquet file: {error}") from None
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                yield row, record
                row += 1
    except (pa.ArrowException, OSError) as error:
        raise file_error(path, CORRUPT_FILE, f"cannot read past row index {row}: {error}") from None


def _dataset_rows(dataset) -> Iterator[tuple[int, Any]]:
    yield from enumerate(dataset)


def read_hf_disk(path: str, split: str) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(os.path.expanduser(path))
    except Exception as error:   # datasets raises assorted types for a damaged folder
        raise file_error(path, CORRUPT_FILE, f"datasets cannot load this folder: "
                         f"{type(error).__name__}: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise file_error(path, SPLIT_NOT_FOUND, f"no split '{split}' (data.train_split / "
                             f"data.validation_split); available: {sorted(loaded)}")
        loaded = loaded[split]
    return _dataset_rows(loaded)


def read_hf_hub(name: str, split: str) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as error:   # offline, unknown name, no such split: the hub's own types
        raise file_error(name, HUB_UNAVAILABLE,
                         f"cannot load hub dataset '{name}' (split '{split}'): {type(error).__name__}: "
                         f"{error}. If this is meant to be a local path, it does not exist") from None
    return _dataset_rows(loaded)


def read_source(source: Source) -> Iterator[tuple[int, Any]]:
    """(row, record | RowError | BLANK_LINE) in file order."""
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
