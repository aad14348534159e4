"""allenai/multipref -> one preference row per (comparison, annotator) judgment, for per-annotator RE-PO.

A MultiPref record (MultiPref-Train.jsonl) holds one prompt (`text`), two responses
(`completion_a`, `completion_b`) and the judgments of two crowdworkers and two experts
(`normal_worker_annotations`, `expert_worker_annotations`), each a dict with `evaluator` (the
annotator id) and `overall_pref` ("A-is-clearly-better" ... "Tie" ... "B-is-clearly-better").
Each non-tie judgment becomes a row in our plain format:

    {"id": "<comparison_id>:<evaluator>", "prompt": text, "chosen": ..., "rejected": ...,
     "annotator_id": evaluator}

Ties carry no preference and are skipped (counted). A malformed record raises MultiPrefError naming
the file, the line and the field.
"""

import json
from collections import Counter
from pathlib import Path

from nemo_repo.files import atomic_file

GROUPS = {"normal": "normal_worker_annotations", "expert": "expert_worker_annotations"}
PREFERS_A = ("A-is-clearly-better", "A-is-slightly-better")
PREFERS_B = ("B-is-clearly-better", "B-is-slightly-better")
TIE = "Tie"


class MultiPrefError(ValueError):
    """A MultiPref record that cannot be flattened."""


def _field(record: dict, name: str, where: str, kind=str):
    value = record.get(name)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise MultiPrefError(f"{where}, field '{name}': expected a non-empty {kind.__name__}, "
                             f"got {value!r:.60}")
    return value


def flatten_record(record, where: str, groups=("normal", "expert")) -> tuple[list[dict], Counter]:
    """Rows for one MultiPref record and the counts of what happened to its judgments."""
    if not isinstance(record, dict):
        raise MultiPrefError(f"{where}: expected a JSON object, got {type(record).__name__}")
    comparison = _field(record, "comparison_id", where)
    prompt = _field(record, "text", where)
    responses = {"A": _field(record, "completion_a", where), "B": _field(record, "completion_b", where)}
    rows, counts = [], Counter()
    for group in groups:
        annotations = _field(record, GROUPS[group], where, list)
        for j, annotation in enumerate(annotations):
            field = f"{GROUPS[group]}[{j}]"
            if not isinstance(annotation, dict):
                raise MultiPrefError(f"{where}, field '{field}': expected an object")
            evaluator = _field(annotation, "evaluator", f"{where}, field '{field}'")
            preference = annotation.get("overall_pref")
            if preference == TIE:
                counts["tie"] += 1
                continue
            if preference not in PREFERS_A + PREFERS_B:
                raise MultiPrefError(f"{where}, field '{field}.overall_pref': unknown value "
                                     f"{preference!r}; expected one of {PREFERS_A + (TIE,) + PREFERS_B}")
            winner, loser = ("A", "B") if preference in PREFERS_A else ("B", "A")
            rows.append({"id": f"{comparison}:{evaluator}", "prompt": prompt, "chosen": responses[winner],
                         "rejected": responses[loser], "annotator_id": evaluator})
            counts["rows"] += 1
    return rows, counts


def flatten_file(path: str | Path, out: str | Path, groups=("normal", "expert")) -> Counter:
    """Flatten a MultiPref JSONL file into our JSONL at `out`; returns the counts (records, rows,
    tie). Written atomically: on an error no partial output is left behind."""
    path, out = Path(path), Path(out)
    totals = Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp, open(path, "rb") as source, open(tmp, "w", encoding="utf-8") as sink:
        for line_number, raw in enumerate(source, start=1):
            where = f"{path}, line {line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPrefError(f"{where}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MultiPrefError(f"{where}: malformed JSON ({error.msg})") from None
            rows, counts = flatten_record(record, where, groups)
            totals["records"] += 1
            totals.update(counts)
            for row in rows:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
    return totals
