"""Row validation: raw records -> PreferenceExample, every problem a RowError naming file/row/field.

Each bad row gets exactly one error (the first problem found in it). `strict` mode raises a
DataValidationError for the first bad row in file order; lenient mode skips bad rows and the
DataReport counts them by reason, exactly. Nothing is dropped or truncated without being counted.
"""

import json
import math
import numbers
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

FIELDS = ("prompt", "chosen", "rejected", "annotator_id", "id", "reference_chosen", "reference_rejected")
REFERENCE_FIELDS = ("reference_chosen", "reference_rejected")   # optional precomputed log-prob sums

# reasons a row can be skipped for (keys of DataReport counts)
MALFORMED_JSON = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
EMPTY_FIELD = "empty_field"
WRONG_TYPE = "wrong_type"
BAD_MESSAGE = "bad_message"
IDENTICAL_RESPONSES = "identical_responses"
ANNOTATOR_ID_PARTIAL = "annotator_id_partial"
BAD_REFERENCE = "bad_reference"
REFERENCE_PARTIAL = "reference_partial"
DUPLICATE_ID = "duplicate_id"
TOO_LONG = "too_long"


@dataclass(frozen=True)
class RowError:
    file: str
    row: int                  # 1-based line for JSONL, 0-based index otherwise (see row_kind)
    row_kind: str             # "line" | "index"
    field: str | None         # e.g. "chosen", "chosen[1].content"; None for whole-row problems
    reason: str
    detail: str

    def __str__(self) -> str:
        where = f"{self.file}, {self.row_kind} {self.row}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.detail} [{self.reason}]"


class DataValidationError(ValueError):
    """Bad input data; `.error` is the RowError (file, row, field, reason)."""

    def __init__(self, error: RowError):
        super().__init__(str(error))
        self.error = error


@dataclass
class PreferenceExample:
    """A validated pair. Plain shape: three strings. Conversational: prompt messages and the
    chosen/rejected response messages (the turns after the shared prompt)."""
    prompt: str | list[dict]
    chosen: str | list[dict]
    rejected: str | list[dict]
    annotator_id: str | None
    pair_id: str | None
    row: int
    reference_chosen: float | None = None     # precomputed reference log-prob sums (both or neither)
    reference_rejected: float | None = None

    @property
    def conversational(self) -> bool:
        return not isinstance(self.prompt, str)


@dataclass
class SplitReport:
    """What happened to one split: exact counts and every error."""
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    blank_lines: int = 0
    pairs_kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    truncated: Counter = field(default_factory=Counter)   # prompt / chosen / rejected / pairs
    errors: list[RowError] = field(default_factory=list)

    def add_error(self, error: RowError) -> None:
        self.skipped[error.reason] += 1
        self.errors.append(error)

    def to_dict(self) -> dict:
        return {"files": self.files, "rows_read": self.rows_read, "blank_lines": self.blank_lines,
                "pairs_kept": self.pairs_kept, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": sum(self.skipped.values()),
                "truncated": dict(sorted(self.truncated.items())),
                "errors": [asdict(e) for e in self.errors]}

    @classmethod
    def from_dict(cls, state: dict) -> "SplitReport":
        return cls(files=list(state["files"]), rows_read=state["rows_read"],
                   blank_lines=state["blank_lines"], pairs_kept=state["pairs_kept"],
                   skipped=Counter(state["skipped"]), truncated=Counter(state["truncated"]),
                   errors=[RowError(**e) for e in state["errors"]])


@dataclass
class DataReport:
    """Per-split SplitReports plus batching figures; print it or dump it as JSON."""
    splits: dict[str, SplitReport] = field(default_factory=dict)
    batching: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> SplitReport:
        return self.splits.setdefault(name, SplitReport())

    def to_dict(self) -> dict:
        return {"splits": {k: v.to_dict() for k, v in self.splits.items()}, "batching": self.batching}

    def to_json(self, indent: int = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        lines = []
        for name, rep in self.splits.items():
            skipped = sum(rep.skipped.values())
            lines.append(f"[{name}] {', '.join(rep.files)}: {rep.rows_read} rows read, "
                         f"{rep.pairs_kept} pairs kept, {skipped} skipped"
                         + (f" ({', '.join(f'{k}={v}' for k, v in sorted(rep.skipped.items()))})"
                            if skipped else "")
                         + (f"; truncated: {', '.join(f'{k}={v}' for k, v in sorted(rep.truncated.items()))}"
                            if rep.truncated else ""))
            lines += [f"  {error}" for error in rep.errors[:20]]
            if len(rep.errors) > 20:
                lines.append(f"  ... {len(rep.errors) - 20} more (see the JSON report)")
        for key, value in self.batching.items():
            lines.append(f"[batching] {key}: {value}")
        return "\n".join(lines)


class _Invalid(Exception):
    def __init__(self, field_name, reason, detail):
        super().__init__(detail)
        self.field, self.reason, self.detail = field_name, reason, detail


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(name, WRONG_TYPE, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise _Invalid(name, EMPTY_FIELD, "empty string")
    return value


def _messages(value, name: str) -> list[dict]:
    """A message dict or a list of them -> list of {role, content} (extra keys dropped)."""
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list):
        raise _Invalid(name, WRONG_TYPE, f"expected a string or a list of messages, got {_type_name(value)}")
    if not items:
        raise _Invalid(name, EMPTY_FIELD, "empty message list")
    out = []
    for j, message in enumerate(items):
        where = f"{name}[{j}]"
        if not isinstance(message, Mapping):
            raise _Invalid(where, BAD_MESSAGE, f"expected a {{role, content}} object, got {_type_name(message)}")
        for key in ("role", "content"):
            if key not in message or message[key] is None:
                raise _Invalid(f"{where}.{key}", BAD_MESSAGE, f"message has no '{key}'")
        out.append({"role": _text(message["role"], f"{where}.role"),
                    "content": _text(message["content"], f"{where}.content")})
    return out


def _identifier(value, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid(name, WRONG_TYPE, f"expected a string or an integer, got {_type_name(value)}")
    text = str(value)
    if not text.strip():
        raise _Invalid(name, EMPTY_FIELD, "empty string")
    return text


def _log_prob_sum(value, name: str) -> float | None:
    """A reference log-prob sum: a finite number <= 0 (JSON number; None = absent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Invalid(name, WRONG_TYPE, f"expected a number (a log-probability sum), got {_type_name(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise _Invalid(name, BAD_REFERENCE, f"{value} is not a finite number")
    if value > 0:
        raise _Invalid(name, BAD_REFERENCE, f"{value} > 0, but a sum of log-probabilities is <= 0")
    return value


def _reference(values: Mapping, columns: Mapping[str, str]) -> tuple[float | None, float | None]:
    chosen, rejected = (_log_prob_sum(values[name], columns[name]) for name in REFERENCE_FIELDS)
    if (chosen is None) != (rejected is None):
        given, missing = ("reference_chosen", "reference_rejected") if rejected is None else \
            ("reference_rejected", "reference_chosen")
        raise _Invalid(columns[missing], REFERENCE_PARTIAL,
                       f"missing while '{columns[given]}' is set: give both reference sums or neither")
    return chosen, rejected


def _responses(prompt: list[dict], value, name: str) -> list[dict]:
    """Response turns: a string (one assistant message), or messages that either repeat the
    prompt turns first (stripped) or hold only the response turns."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": _text(value, name)}]
    messages = _messages(value, name)
    if messages[:len(prompt)] == prompt:
        messages = messages[len(prompt):]
        if not messages:
            raise _Invalid(name, EMPTY_FIELD, "no response turns after the prompt turns")
    if messages[-1]["role"] != "assistant":
        raise _Invalid(f"{name}[{len(messages) - 1}].role", BAD_MESSAGE,
                       f"the last response turn must have role 'assistant', got '{messages[-1]['role']}'")
    return messages


def _shared_prefix(chosen: list[dict], rejected: list[dict]) -> int:
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return n


def normalize(record: Any, columns: Mapping[str, str]) -> PreferenceExample:
    """One raw record -> PreferenceExample (row=-1; the caller sets it) or raise _Invalid."""
    if not isinstance(record, Mapping):
        raise _Invalid(None, NOT_AN_OBJECT, f"expected an object, got {_type_name(record)}")
    columns = {name: columns.get(name, name) for name in FIELDS}
    values = {name: record.get(columns[name]) for name in FIELDS}
    for name in ("chosen", "rejected"):
        if values[name] is None:
            raise _Invalid(columns[name], MISSING_FIELD, "missing")
    prompt, chosen, rejected = values["prompt"], values["chosen"], values["rejected"]
    if prompt is None:
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise _Invalid(columns["prompt"], MISSING_FIELD,
                           "missing (allowed only when chosen and rejected are message lists "
                           "that share the prompt turns)")
        chosen = _messages(chosen, columns["chosen"])
        rejected = _messages(rejected, columns["rejected"])
        n = _shared_prefix(chosen, rejected)
        if n == 0:
            raise _Invalid(columns["prompt"], MISSING_FIELD,
                           "missing, and chosen/rejected share no leading prompt turns")
        prompt = chosen[:n]
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        prompt = _text(prompt, columns["prompt"])
        chosen, rejected = _text(chosen, columns["chosen"]), _text(rejected, columns["rejected"])
    else:
        prompt = ([{"role": "user", "content": _text(prompt, columns["prompt"])}]
                  if isinstance(prompt, str) else _messages(prompt, columns["prompt"]))
        chosen = _responses(prompt, chosen, columns["chosen"])
        rejected = _responses(prompt, rejected, columns["rejected"])
    if chosen == rejected:
        raise _Invalid(columns["rejected"], IDENTICAL_RESPONSES, "rejected response is identical to chosen")
    reference_chosen, reference_rejected = _reference(values, columns)
    return PreferenceExample(prompt, chosen, rejected,
                             annotator_id=_identifier(values["annotator_id"], columns["annotator_id"]),
                             pair_id=_identifier(values["id"], columns["id"]), row=-1,
                             reference_chosen=reference_chosen, reference_rejected=reference_rejected)


def validate_records(name: str, row_kind: str, records: Iterable[tuple[int, Any]],
                     columns: Mapping[str, str], report: SplitReport,
                     strict: bool) -> list[PreferenceExample]:
    """Validate one file's records ((row, record | RowError | None = blank line), file order).

    Also checks, across rows, that annotator ids and reference sums are each on all rows or none
    (the rows lacking them are the bad rows) and that pair ids are unique. Errors are reported in row order; in strict
    mode the first one is raised."""
    examples, errors = [], []
    for row, record in records:
        if record is None:            # a blank JSONL line
            report.blank_lines += 1
            continue
        report.rows_read += 1
        if isinstance(record, RowError):
            errors.append(record)
            continue
        try:
            example = normalize(record, columns)
        except _Invalid as bad:
            errors.append(RowError(name, row, row_kind, bad.field, bad.reason, bad.detail))
            continue
        example.row = row
        examples.append(example)
    with_ids = sum(e.annotator_id is not None for e in examples)
    with_reference = sum(e.reference_chosen is not None for e in examples)
    seen, kept = set(), []
    for example in examples:
        if 0 < with_ids < len(examples) and example.annotator_id is None:
            errors.append(RowError(name, example.row, row_kind, columns["annotator_id"],
                                   ANNOTATOR_ID_PARTIAL,
                                   f"missing, while {with_ids} of {len(examples)} valid rows have one"))
        elif 0 < with_reference < len(examples) and example.reference_chosen is None:
            errors.append(RowError(name, example.row, row_kind,
                                   columns.get("reference_chosen", "reference_chosen"), REFERENCE_PARTIAL,
                                   f"missing, while {with_reference} of {len(examples)} valid rows "
                                   "have reference sums"))
        elif example.pair_id is not None and example.pair_id in seen:
            errors.append(RowError(name, example.row, row_kind, columns["id"], DUPLICATE_ID,
                                   f"pair id '{example.pair_id}' already used by an earlier row"))
        else:
            seen.add(example.pair_id)
            kept.append(example)
    errors.sort(key=lambda e: e.row)
    if strict and errors:
        raise DataValidationError(errors[0])
    for error in errors:
        report.add_error(error)
    return kept
