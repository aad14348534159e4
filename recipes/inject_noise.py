"""Flip a seeded share of the labels of a preference JSONL (injected label noise) and write the
ground truth next to it, in the synthetic benchmark's truth.json format ("flipped_ids"), so that
training reports accuracy against the true labels and recipes/demo-style detection can be scored.

    python -m recipes.inject_noise --input pairs.jsonl --out DIR --rate 0.3 [--seed 0]

Writes DIR/train.jsonl (same rows, chosen/rejected swapped on flipped rows) and DIR/truth.json.
The input is any format the data layer reads (data.format auto); every row must parse and have an
"id", "chosen" and "rejected": a bad row stops it with exit code 2, naming file and row (nothing is dropped).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nemo_repo.data.readers import Source, read_source, row_kind
from nemo_repo.data.validate import BLANK_LINE, MISSING_FIELD, NOT_AN_OBJECT, DataValidationError, RowError
from recipes.errors import invalid_input


def read_rows(path: str) -> list[dict]:
    """Every row of `path` in file order; DataValidationError at the first that does not parse
    or is no object with an id, chosen and rejected."""
    source = Source(path)
    kind = row_kind(source.resolved_format())
    rows = []
    for row, record in read_source(source):
        if isinstance(record, RowError):
            raise DataValidationError(record)
        if record is BLANK_LINE:
            continue
        if not isinstance(record, dict):
            raise DataValidationError(RowError(path, row, kind, None, NOT_AN_OBJECT,
                                               f"expected an object, got {type(record).__name__}"))
        for name in ("id", "chosen", "rejected"):
            if record.get(name) is None:
                raise DataValidationError(RowError(path, row, kind, name, MISSING_FIELD,
                                                   "missing (every row needs an id, chosen and rejected)"))
        rows.append(record)
    return rows


def inject(rows: list[dict], rate: float, seed: int) -> tuple[list[dict], list[str]]:
    """(rows with exactly round(rate * N) labels flipped, ids of the flipped rows)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--rate must lie in [0, 1), got {rate}")
    count = int(round(rate * len(rows)))
    flip = set(np.random.default_rng(seed).permutation(len(rows))[:count].tolist())
    out, flipped = [], []
    for i, row in enumerate(rows):
        if i in flip:
            row = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
            flipped.append(str(row["id"]))
        out.append(row)
    return out, flipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    source = Path(args.input).expanduser()
    try:
        noisy, flipped = inject(read_rows(str(source)), args.rate, args.seed)
    except DataValidationError as error:
        return invalid_input(error, "invalid data")
    except ValueError as error:
        return invalid_input(error, "invalid setting")
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in noisy), encoding="utf-8")
    truth = {"task": "injected_noise", "source": str(source), "rate": args.rate, "seed": args.seed,
             "flipped_ids": flipped, "validation_flipped_ids": []}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    print(f"{len(flipped)} of {len(noisy)} labels flipped -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
