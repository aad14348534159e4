"""Row validation: raw records -> PreferenceExample, every problem a RowError naming file/row/field.

Each bad row gets exactly one error (the first problem found in it). `strict` mode raises a
DataValidationError for the first bad row in file order; lenient mode skips bad rows and the
DataReport counts them by reason, exactly. Nothing is dropped or truncated without being counted.
A problem with a whole file (missing, unreadable, not a supported format, empty, no valid row)
is a DataValidationError in both modes, its RowError's `row` None.

Rows are named as in the file: the 1-based line of a JSONL file, the 0-based index of a JSON
list / Parquet table / `datasets` split; messages by their 0-based index in the field as written
(`chosen[2]` is the third message of the row's `chosen` list, prompt turns repeated there included).
"""

import json
import math
import numbers
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
INVALID_UNICODE = "invalid_unicode"         # a lone surrogate (a JSON "\\ud800" escape): no tokenizer encodes it
NESTING_TOO_DEEP = "nesting_too_deep"       # JSON nested deeper than the parser's recursion limit
DUPLICATE_KEY = "duplicate_key"             # {"chosen": .., "chosen": ..}: which one is meant?
BAD_ROLE = "bad_role"                       # unknown role, or turns out of order
ANNOTATOR_ID_AMBIGUOUS = "annotator_id_ambiguous"   # 1 and "1": one annotator or two?
NO_CHAT_TEMPLATE = "no_chat_template"       # conversational row, tokenizer without a chat template
TEMPLATE_MISMATCH = "template_mismatch"     # the template does not render the prompt as a prefix
TEMPLATE_ERROR = "template_error"           # the chat template raised (e.g. "System role not supported")
TOKENIZER_ERROR = "tokenizer_error"         # the tokenizer raised on the row's text

# whole-file problems (a DataValidationError in both modes)
NOT_FOUND = "not_found"
UNREADABLE = "unreadable"                   # permissions, symlink loop, a folder that is no dataset
UNSUPPORTED_FORMAT = "unsupported_format"   # CSV, compressed, a .parquet file that is not Parquet
CORRUPT_FILE = "corrupt_file"               # truncated Parquet, a JSON document that does not parse
SPLIT_NOT_FOUND = "split_not_found"
HUB_UNAVAILABLE = "hub_unavailable"
EMPTY_FILE = "empty_file"
NO_VALID_ROWS = "no_valid_rows"
TOO_FEW_PAIRS = "too_few_pairs"
TOO_MANY_SKIPPED = "too_many_skipped"

ROLES = ("system", "user", "assistant", "tool")


class _BlankLine:
    """What readers yield for a blank JSONL line: counted, not a row (unlike a `null` line)."""

    def __repr__(self) -> str:
        return "BLANK_LINE"


BLANK_LINE = _BlankLine()
WARN_SKIPPED_FRACTION = 0.05   # the report warns above this share of skipped rows (per split)


@dataclass(frozen=True)
class RowError:
    file: str
    row: int | None           # 1-based line for JSONL, 0-based index otherwise; None: the whole file
    row_kind: str             # "line" | "index"
    field: str | None         # e.g. "chosen", "chosen[1].content"; None for whole-row problems
    reason: str
    detail: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}, {self.row_kind} {self.row}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.detail} [{self.reason}]"


class DataValidationError(ValueError):
    """Bad input data; `.error` is the RowError (file, row, field, reason)."""

    def __init__(self, error: RowError):
        super().__init__(str(error))
        self.error = error

    def __reduce__(self):   # picklable (broadcast from rank 0 to the other ranks)
        return DataValidationError, (self.error,)


def file_error(file, reason: str, detail: str) -> DataValidationError:
    """A problem with a whole file (or split), not one of its rows."""
    return DataValidationError(RowError(str(file), None, "index", None, reason, detail))


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

    @property
    def skipped_fraction(self) -> float:
        return sum(self.skipped.values()) / self.rows_read if self.rows_read else 0.0

    def summary(self) -> str:
        """'N rows read, K pairs kept, S skipped (reason=n, ...)'."""
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return (f"{self.rows_read} rows read, {self.pairs_kept} pairs kept, {skipped} skipped"
                + (f" ({reasons})" if skipped else ""))

    def to_dict(self) -> dict:
        return {"files": self.files, "rows_read": self.rows_read, "blank_lines": self.blank_lines,
                "pairs_kept": self.pairs_kept, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": sum(self.skipped.values()),
                "skipped_fraction": round(self.skipped_fraction, 6),
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
    warnings: list[str] = field(default_factory=list)

    EXAMPLES = 20   # errors printed per split (all of them are in the JSON)

    def split(self, name: str) -> SplitReport:
        return self.splits.setdefault(name, SplitReport())

    def check_skipped(self, max_fraction: float | None) -> None:
        """Raise when a split skipped more than `max_fraction` of its rows; without a limit, add
        a warning above WARN_SKIPPED_FRACTION."""
        for name, rep in self.splits.items():
            fraction = rep.skipped_fraction
            where = ", ".join(rep.files)
            if max_fraction is not None and fraction > max_fraction:
                raise file_error(where, TOO_MANY_SKIPPED,
                                 f"{fraction:.1%} of the {name} rows were skipped, more than "
                                 f"data.max_skipped_fraction={max_fraction}: {rep.summary()}; "
                                 f"first: {rep.errors[0]}")
            if max_fraction is None and fraction > WARN_SKIPPED_FRACTION:
                self.warnings.append(
                    f"WARNING: {fraction:.1%} of the {name} rows ({where}) were skipped "
                    f"({rep.summary()}); set data.max_skipped_fraction to refuse such data, "
                    f"data.strict=true to stop at the first bad row")

    def to_dict(self) -> dict:
        return {"warnings": self.warnings,
                "splits": {k: v.to_dict() for k, v in self.splits.items()}, "batching": self.batching}

    def to_json(self, indent: int = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def log_to(self, folder) -> None:
        """Print the report and write it to folder/data_report.json (a run's rank 0)."""
        print(self, flush=True)
        (Path(folder) / "data_report.json").write_text(self.to_json() + "\n", encoding="utf-8")

    def __str__(self) -> str:
        lines = list(self.warnings)
        for name, rep in self.splits.items():
            lines.append(f"[{name}] {', '.join(rep.files)}: {rep.summary()}"
                         + (f"; truncated: {', '.join(f'{k}={v}' for k, v in sorted(rep.truncated.items()))}"
                            if rep.truncated else ""))
            lines += [f"  {error}" for error in rep.errors[:self.EXAMPLES]]
            if len(rep.errors) > self.EXAMPLES:
                lines.append(f"  ... {len(rep.errors) - self.EXAMPLES} more (see the JSON report)")
        for key, value in self.batching.items():
            lines.append(f"[batching] {key}: {value}")
        return "\n".join(lines)


class _Invalid(Exception):
    def __init__(self, field_name, reason, detail):
        super().__init__(detail)
        self.field, self.reason, self.detail = field_name, reason, detail


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _encodable(text: str, name: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise _Invalid(name, INVALID_UNICODE,
                       f"character {error.start} is a lone surrogate (U+{ord(text[error.start]):04X}, "
                       f"a JSON \\u escape of half a pair), which no tokenizer can encode") from None
    return text


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(name, WRONG_TYPE, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise _Invalid(name, EMPTY_FIELD, "empty string")
    return _encodable(value, name)


def _messages(value, name: str) -> tuple[list[dict], list[str]]:
    """A message dict or a list of them -> ({role, content} dicts (extra keys dropped), where
    each one is in the row: `name[j]`, or `name` for a single message)."""
    single = isinstance(value, Mapping)
    items = [value] if single else value
    if not isinstance(items, list):
        raise _Invalid(name, WRONG_TYPE, f"expected a string or a list of messages, got {_type_name(value)}")
    if not items:
        raise _Invalid(name, EMPTY_FIELD, "empty message list")
    out, places = [], []
    for j, message in enumerate(items):
        where = name if single else f"{name}[{j}]"
        if not isinstance(message, Mapping):
            raise _Invalid(where, BAD_MESSAGE, f"expected a {{role, content}} object, got {_type_name(message)}")
        for key in ("role", "content"):
            if key not in message or message[key] is None:
                raise _Invalid(f"{where}.{key}", BAD_MESSAGE, f"message has no '{key}'")
        role = _text(message["role"], f"{where}.role")
        if role not in ROLES:
            raise _Invalid(f"{where}.role", BAD_ROLE, f"unknown role '{role}'; expected one of {', '.join(ROLES)}")
        out.append({"role": role, "content": _text(message["content"], f"{where}.content")})
        places.append(where)
    return out, places


def _check_turns(turns: list[dict], places: list[str], prompt_length: int) -> None:
    """Turn order of prompt + response: an optional system turn first, then user and assistant
    turns alternating from a user turn (tool turns only after an assistant or tool turn); the
    prompt ends with a user or tool turn, the response starts and ends with an assistant turn."""
    previous = None
    for i, (turn, place) in enumerate(zip(turns, places)):
        role, problem = turn["role"], None
        if role == "system":
            if i > 0:
                problem = "a system turn is only allowed as the first turn"
        elif previous in (None, "system") and role != "user":
            problem = f"the conversation must start with a user turn (after an optional system turn), got '{role}'"
        elif role == previous and role != "tool":
            problem = f"two '{role}' turns in a row (user and assistant turns alternate)" + (
                "; responses that repeat the prompt must repeat all of its turns exactly"
                if i == prompt_length else "")
        elif role == "tool" and previous not in ("assistant", "tool"):
            problem = "a tool turn must follow an assistant (or tool) turn"
        elif i == prompt_length and role != "assistant":
            problem = f"the first response turn must have role 'assistant', got '{role}'"
        if i == prompt_length - 1 and role not in ("user", "tool") and problem is None:
            problem = f"the prompt must end with a user (or tool) turn that the response answers, got '{role}'"
        if i == len(turns) - 1 and role != "assistant" and problem is None:
            problem = f"the last response turn must have role 'assistant', got '{role}'"
        if problem:
            raise _Invalid(f"{place}.role", BAD_ROLE, problem)
        previous = role


def _identifier(value, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid(name, WRONG_TYPE, f"expected a string or an integer, got {_type_name(value)}")
    text = str(value)
    if not text.strip():
        raise _Invalid(name, EMPTY_FIELD, "empty string")
    return _encodable(text, name)


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


def _responses(prompt: list[dict], prompt_places: list[str], value, name: str) -> list[dict]:
    """Response turns: a string (one assistant message), or messages that either repeat the
    prompt turns first (stripped) or hold only the response turns; the turn order of the whole
    conversation is checked."""
    if isinstance(value, str):
        messages, places = [{"role": "assistant", "content": _text(value, name)}], [name]
    else:
        messages, places = _messages(value, name)
        if messages[:len(prompt)] == prompt:
            messages, places = messages[len(prompt):], places[len(prompt):]
            if not messages:
                raise _Invalid(name, EMPTY_FIELD, "no response turns after the prompt turns")
    _check_turns(prompt + messages, prompt_places + places, len(prompt))
    return messages


def _shared_prefix(chosen: list[dict], rejected: list[dict]) -> int:
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return n


def normalize(record: Any, columns: Mapping[str, str], reference: bool = False) -> PreferenceExample:
    """One raw record -> PreferenceExample (row=-1; the caller sets it) or raise _Invalid.
    The reference sum columns are read only when `reference` (else ignored, whatever they hold)."""
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
        chosen_turns, chosen_places = _messages(chosen, columns["chosen"])
        n = _shared_prefix(chosen_turns, _messages(rejected, columns["rejected"])[0])
        if n == 0:
            raise _Invalid(columns["prompt"], MISSING_FIELD,
                           "missing, and chosen/rejected share no leading prompt turns")
        prompt, prompt_places = chosen_turns[:n], chosen_places[:n]
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        prompt = _text(prompt, columns["prompt"])
        chosen, rejected = _text(chosen, columns["chosen"]), _text(rejected, columns["rejected"])
    else:
        if isinstance(prompt, str):
            prompt, prompt_places = [{"role": "user", "content": _text(prompt, columns["prompt"])}], \
                [columns["prompt"]]
        elif values["prompt"] is not None:
            prompt, prompt_places = _messages(prompt, columns["prompt"])
        chosen = _responses(prompt, prompt_places, chosen, columns["chosen"])
        rejected = _responses(prompt, prompt_places, rejected, columns["rejected"])
    if chosen == rejected:
        raise _Invalid(columns["rejected"], IDENTICAL_RESPONSES, "rejected response is identical to chosen")
    reference_chosen, reference_rejected = _reference(values, columns) if reference else (None, None)
    return PreferenceExample(prompt, chosen, rejected,
                             annotator_id=_identifier(values["annotator_id"], columns["annotator_id"]),
                             pair_id=_identifier(values["id"], columns["id"]), row=-1,
                             reference_chosen=reference_chosen, reference_rejected=reference_rejected)


def _all_or_none(present: int, total: int, has: bool, what: str) -> str | None:
    """All-or-none columns (annotator ids, reference sums): when only some valid rows have one,
    the minority side is in error (the rows lacking it on a tie). Returns the detail, or None."""
    if not 0 < present < total:
        return None
    if present * 2 < total and has:
        return f"set on only {present} of {total} valid rows: give every row {what} or none"
    if present * 2 >= total and not has:
        return f"missing, while {present} of {total} valid rows have {what}"
    return None


def validate_records(name: str, row_kind: str, records: Iterable[tuple[int, Any]],
                     columns: Mapping[str, str], report: SplitReport,
                     strict: bool, reference: bool = False) -> list[PreferenceExample]:
    """Validate one file's records ((row, record | RowError | BLANK_LINE), file order).

    Also checks across rows that annotator ids and (when `reference`) reference sums are each on
    all rows or none (`_all_or_none`), that no two annotator ids differ only in their JSON type
    (1 and "1"), and that pair ids are unique. Errors are reported in row order; in strict mode
    the first one is raised. A file without any row is an error in both modes."""
    examples, errors, id_types = [], [], {}
    for row, record in records:
        if record is BLANK_LINE:
            report.blank_lines += 1
            continue
        report.rows_read += 1
        if isinstance(record, RowError):
            errors.append(record)
            continue
        try:
            example = normalize(record, columns, reference)
        except _Invalid as bad:
            errors.append(RowError(name, row, row_kind, bad.field, bad.reason, bad.detail))
            continue
        example.row = row
        examples.append(example)
        id_types[row] = type(record.get(columns.get("annotator_id", "annotator_id"))).__name__
    if report.rows_read == 0:
        raise file_error(name, EMPTY_FILE, "no rows (empty, or only blank lines)")
    with_ids = sum(e.annotator_id is not None for e in examples)
    with_reference = sum(e.reference_chosen is not None for e in examples)
    first_form, seen, kept = {}, set(), []   # annotator id text -> (JSON type, row) first seen
    id_column = columns.get("annotator_id", "annotator_id")
    reference_column = columns.get("reference_chosen", "reference_chosen")
    for example in examples:
        row = example.row
        partial_id = _all_or_none(with_ids, len(examples), example.annotator_id is not None,
                                  "an annotator_id")
        partial_reference = _all_or_none(with_reference, len(examples),
                                         example.reference_chosen is not None, "reference sums")
        form = first_form.setdefault(example.annotator_id, (id_types[row], row)) \
            if example.annotator_id is not None else None
        if partial_id:
            errors.append(RowError(name, row, row_kind, id_column, ANNOTATOR_ID_PARTIAL, partial_id))
        elif form is not None and form[0] != id_types[row]:
            errors.append(RowError(name, row, row_kind, id_column, ANNOTATOR_ID_AMBIGUOUS,
                                   f"annotator id {example.annotator_id} is a JSON {id_types[row]} here "
                                   f"and a {form[0]} at {row_kind} {form[1]}: one annotator or two? "
                                   f"Write every id with one type"))
        elif partial_reference:
            errors.append(RowError(name, row, row_kind, reference_column, REFERENCE_PARTIAL,
                                   partial_reference))
        elif example.pair_id is not None and example.pair_id in seen:
            errors.append(RowError(name, row, row_kind, columns.get("id", "id"), DUPLICATE_ID,
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


def require_pairs(report: SplitReport) -> None:
    """After validation and tokenization: a split without a single valid pair is an error."""
    if report.pairs_kept == 0:
        raise file_error(", ".join(report.files), NO_VALID_ROWS,
                         f"no valid pair: {report.summary()}"
                         + (f"; first: {report.errors[0]}" if report.errors else ""))
