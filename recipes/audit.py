"""Label audit of a finished RE run: annotators from least to most reliable and the labels RE-PO
distrusts most, with their texts. Prints Markdown and writes it to RUN_DIR/audit.md.

    python -m recipes.audit runs/demo/re_dpo [--top 20] [--data pairs.jsonl] [--width 60]

Texts come from the training data in the run's config.yaml (the synthetic benchmark included) or
from --data; without either, ids only. Exit codes: 0 ok; 2 not an RE run directory.
"""

import argparse
import sys
from pathlib import Path

import yaml

from nemo_repo.data.pipeline import build_data_config, materialize_synthetic
from nemo_repo.training.audit import AUDIT_FILE, render_audit, training_rows
from recipes.errors import invalid_input


def _texts(run_dir: Path, data_file: str | None) -> dict | None:
    if data_file:
        return training_rows(data_file)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return None
    data = materialize_synthetic(build_data_config(yaml.safe_load(config_file.read_text())["data"]))
    return training_rows(data.train, data.columns, data.format, data.train_split)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--top", type=int, default=20, help="how many of the lowest-w labels to list")
    parser.add_argument("--data", help="the training file, when the run's config does not point at it")
    parser.add_argument("--width", type=int, default=60, help="characters shown per text (cut with …)")
    args = parser.parse_args(argv)
    try:
        report = render_audit(args.run_dir, _texts(args.run_dir, args.data), args.top, args.width)
    except (OSError, ValueError) as error:
        return invalid_input(error, f"cannot audit {args.run_dir}")
    (args.run_dir / AUDIT_FILE).write_text(report, encoding="utf-8")
    print(report, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
