"""The label audit of a finished RE run: which annotators and which labels RE-PO distrusts.

Reads the run's reliability.json and pair_weights.jsonl and, for the texts, the training rows the
run was configured with (or a file given explicitly); renders a Markdown report. Pair ids are matched
the way the data layer assigns them: the row's `id` (through the column mapping), else
"<file name>:<row>".
"""

import json
from pathlib import Path

from nemo_repo.data.readers import Source, read_source
from nemo_repo.data.tokenize import default_pair_id
from nemo_repo.training.outputs import PAIR_WEIGHTS_FILE, RELIABILITY_FILE, read_records

AUDIT_FILE = "audit.md"


def _as_text(value) -> str:
    """A response or prompt as one line: strings as they are, messages as "role: content" turns."""
    if isinstance(value, list):
        value = " | ".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in value if isinstance(m, dict))
    return " ".join(str(value).split())


def _cell(value, width: int) -> str:
    text = _as_text(value).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def training_rows(path: str, columns: dict | None = None, fmt: str = "auto", split: str = "train") -> dict:
    """{pair id: {"prompt", "chosen", "rejected"}} of a training source (unparseable rows skipped:
    the data layer skipped them too)."""
    columns = {name: (columns or {}).get(name, name) for name in ("prompt", "chosen", "rejected", "id")}
    rows = {}
    for row, record in read_source(Source(path, fmt, split)):
        if not isinstance(record, dict):
            continue
        pair_id = record.get(columns["id"])
        key = str(pair_id) if pair_id is not None else default_pair_id(path, row)
        rows[key] = {field: record.get(columns[field]) for field in ("prompt", "chosen", "rejected")}
    return rows


def render_audit(run_dir: str | Path, texts: dict | None = None, top: int = 20, width: int = 60) -> str:
    """Markdown: annotators from least to most reliable, then the `top` pairs with the lowest w."""
    run_dir = Path(run_dir)
    reliability = json.loads((run_dir / RELIABILITY_FILE).read_text())
    pairs = [p for p in read_records(run_dir / PAIR_WEIGHTS_FILE) if p.get("w") is not None]
    if not pairs:
        raise ValueError(f"{run_dir / PAIR_WEIGHTS_FILE} has no posterior w: the run did not use robust=re")
    below = {}
    for p in pairs:
        below.setdefault(p["annotator_id"], []).append(p["w"] < 0.5)
    lines = [f"# Label audit of {run_dir}", "",
             f"{sum(p['w'] < 0.5 for p in pairs)} of {len(pairs)} training labels have w < 0.5 "
             "(RE-PO believes the label is more likely wrong than right).", "",
             "## Annotators, least reliable first", "",
             "| annotator | eta | labels | mean w | labels with w < 0.5 |", "|---|---:|---:|---:|---:|"]
    for r in sorted(reliability, key=lambda r: r["eta"]):
        flags = below.get(r["annotator_id"], [])
        mean_w = "" if r["mean_w"] is None else f"{r['mean_w']:.3f}"
        lines.append(f"| {_cell(r['annotator_id'], 40)} | {r['eta']:.3f} | {r['labels']} | {mean_w} | "
                     f"{sum(flags)} ({sum(flags) / max(len(flags), 1):.1%}) |")
    lines += ["", f"## The {min(top, len(pairs))} labels RE-PO distrusts most (lowest w)", ""]
    header = "| id | annotator | w |" + (" prompt | labelled chosen | labelled rejected |" if texts else "")
    lines += [header, "|---|---|---:|" + ("---|---|---|" if texts else "")]
    for p in sorted(pairs, key=lambda p: p["w"])[:top]:
        line = f"| {_cell(p['id'], 40)} | {_cell(p['annotator_id'], 30)} | {p['w']:.4f} |"
        if texts:
            row = texts.get(p["id"])
            line += (" " + " | ".join(_cell(row[f], width) for f in ("prompt", "chosen", "rejected")) + " |"
                     if row else " (not in the data file) | | |")
        lines.append(line)
    return "\n".join(lines) + "\n"
