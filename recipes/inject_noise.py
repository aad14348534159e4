"""Flip a seeded share of the labels of a preference JSONL (injected label noise) and write the
ground truth next to it, in the synthetic benchmark's truth.json format ("flipped_ids"), so that
training reports accuracy against the true labels and recipes/demo-style detection can be scored.

    python -m recipes.inject_noise --input pairs.jsonl --out DIR --rate 0.3 [--seed 0]

Writes DIR/train.jsonl (same rows, chosen/rejected swapped on flipped rows) and DIR/truth.json.
Every row needs an "id".
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def inject(rows: list[dict], rate: float, seed: int) -> tuple[list[dict], list[str]]:
    """(rows with exactly round(rate * N) labels flipped, ids of the flipped rows)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--rate must lie in [0, 1), got {rate}")
    count = int(round(rate * len(rows)))
    flip = set(np.random.default_rng(seed).permutation(len(rows))[:count].tolist())
    out, flipped = [], []
    for i, row in enumerate(rows):
        if "id" not in row:
            raise ValueError(f"row {i + 1}: no 'id' field (needed to record which rows were flipped)")
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
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        noisy, flipped = inject(rows, args.rate, args.seed)
    except ValueError as error:
        print(f"{source}: {error}", file=sys.stderr)
        return 2
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in noisy), encoding="utf-8")
    truth = {"task": "injected_noise", "source": str(source), "rate": args.rate, "seed": args.seed,
             "flipped_ids": flipped, "validation_flipped_ids": []}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    print(f"{len(flipped)} of {len(rows)} labels flipped -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
