"""Prepare preference data ahead of training.

    # the synthetic noisy-annotator benchmark (train/validation[/test] JSONL, tokenizer/, truth.json)
    python -m recipes.prepare_data synthetic --out data/synthetic [--task addition|copy] \\
        [--n-train 4000] [--n-test 0] [--train-prompts N] [--length 4] [--seed 0] \\
        [--etas 0.95 0.85 0.70 0.55] [--proportions 0.4 0.3 0.2 0.1] [--max-operand 9]

    # read + validate + tokenize a data set (fills the cache training uses) and print the report
    python -m recipes.prepare_data check --train pairs.jsonl --tokenizer path/to/tokenizer \\
        [--validation val.jsonl | --validation-fraction 0.05] [--column prompt=question ...] \\
        [--max-length 1024] [--truncation truncate|drop] [--strict] [--packing] \\
        [--micro-batch-size 1 --global-batch-size 8] [--report-json report.json]
    python -m recipes.prepare_data check --config conf/data/<name>.yaml [same flags override it]

    # allenai/multipref (MultiPref-Train.jsonl) -> one row per (comparison, annotator) judgment
    python -m recipes.prepare_data multipref --input MultiPref-Train.jsonl \\
        --out data/multipref/train.jsonl [--groups normal expert]

Exit codes: 0 ok; 2 invalid settings or invalid data (a bad row with --strict, a file that cannot
be read, no valid pair, ...: one line naming file, row and field; NEMO_REPO_DEBUG=1 shows the
traceback); 1 an unreadable MultiPref input.
"""

import argparse
import sys
from pathlib import Path

from nemo_repo.data.synthetic import SyntheticConfig, write_synthetic
from recipes.errors import invalid_input


def _synthetic(args) -> int:
    config = SyntheticConfig(n_train=args.n_train, n_validation=args.n_validation,
                             max_operand=args.max_operand, etas=tuple(args.etas),
                             proportions=tuple(args.proportions), seed=args.seed, task=args.task,
                             n_test=args.n_test, train_prompts=args.train_prompts, length=args.length)
    paths = write_synthetic(args.out, config)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _multipref(args) -> int:
    from nemo_repo.data.multipref import MultiPrefError, flatten_file

    try:
        counts = flatten_file(args.input, args.out, tuple(args.groups))
    except (OSError, MultiPrefError) as error:
        print(f"invalid MultiPref input: {error}", file=sys.stderr)
        return 1
    print(f"{args.out}: {counts['rows']} rows from {counts['records']} comparisons "
          f"({counts['tie']} tie judgments skipped)")
    return 0


def _data_section(args) -> dict:
    section = {}
    if args.config:
        from omegaconf import OmegaConf
        section = OmegaConf.to_container(OmegaConf.load(args.config), resolve=True)
        section.pop("defaults", None)
    flags = {"train": args.train, "validation": args.validation, "tokenizer": args.tokenizer,
             "validation_fraction": args.validation_fraction, "format": args.format,
             "max_length": args.max_length, "truncation": args.truncation,
             "chat_template": args.chat_template, "cache_dir": args.cache_dir,
             "incomplete_batch": args.incomplete_batch, "pack_length": args.pack_length}
    section.update({k: v for k, v in flags.items() if v is not None})
    for flag in ("strict", "packing"):
        if getattr(args, flag):
            section[flag] = True
    if args.no_append_eos:
        section["append_eos"] = False
    if args.column:
        columns = dict(section.get("columns") or {})
        for item in args.column:
            field, _, column = item.partition("=")
            if not column:
                raise ValueError(f"--column expects FIELD=COLUMN, got '{item}'")
            columns[field] = column
        section["columns"] = columns
    return section


def _check(args) -> int:
    from nemo_repo.data.pipeline import PreferenceData, build_data_config
    from nemo_repo.data.validate import DataValidationError

    try:
        config = build_data_config(_data_section(args))
    except (KeyError, TypeError, ValueError) as error:
        return invalid_input(error, "invalid data settings")
    try:
        data = PreferenceData(config, args.micro_batch_size, args.global_batch_size)
    except DataValidationError as error:
        return invalid_input(error, "invalid data")
    print(data.report)
    print(f"annotators ({len(data.annotators)}): {', '.join(data.annotators.ids()[:20])}")
    if args.report_json:
        Path(args.report_json).write_text(data.report.to_json() + "\n")
        print(f"report written to {args.report_json}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    synthetic = commands.add_parser("synthetic", help="write the synthetic noisy-annotator benchmark")
    defaults = SyntheticConfig()
    synthetic.add_argument("--out", required=True, type=Path)
    synthetic.add_argument("--n-train", type=int, default=defaults.n_train)
    synthetic.add_argument("--n-validation", type=int, default=defaults.n_validation)
    synthetic.add_argument("--max-operand", type=int, default=defaults.max_operand)
    synthetic.add_argument("--etas", type=float, nargs="+", default=list(defaults.etas))
    synthetic.add_argument("--proportions", type=float, nargs="+", default=list(defaults.proportions))
    synthetic.add_argument("--seed", type=int, default=defaults.seed)
    synthetic.add_argument("--task", choices=["addition", "copy"], default=defaults.task)
    synthetic.add_argument("--n-test", type=int, default=defaults.n_test)
    synthetic.add_argument("--train-prompts", type=int, default=defaults.train_prompts)
    synthetic.add_argument("--length", type=int, default=defaults.length)

    check = commands.add_parser("check", help="read, validate and tokenize; print the report")
    check.add_argument("--config", help="a data config YAML (conf/data/*.yaml); flags override it")
    check.add_argument("--train")
    check.add_argument("--validation")
    check.add_argument("--validation-fraction", type=float)
    check.add_argument("--tokenizer")
    check.add_argument("--format", choices=["auto", "jsonl", "json", "parquet", "hf_disk", "hf_hub"])
    check.add_argument("--column", action="append", metavar="FIELD=COLUMN",
                       help="column mapping, e.g. --column prompt=question (repeatable)")
    check.add_argument("--max-length", type=int)
    check.add_argument("--truncation", choices=["truncate", "drop"])
    check.add_argument("--chat-template", choices=["auto", "never"])
    check.add_argument("--no-append-eos", action="store_true")
    check.add_argument("--strict", action="store_true")
    check.add_argument("--packing", action="store_true")
    check.add_argument("--pack-length", type=int)
    check.add_argument("--incomplete-batch", choices=["drop", "wrap"])
    check.add_argument("--micro-batch-size", type=int, default=1)
    check.add_argument("--global-batch-size", type=int, default=1)
    check.add_argument("--cache-dir")
    check.add_argument("--report-json")

    multipref = commands.add_parser("multipref", help="flatten allenai/multipref to one row per judgment")
    multipref.add_argument("--input", required=True, type=Path, help="MultiPref-Train.jsonl")
    multipref.add_argument("--out", required=True, type=Path, help="output JSONL")
    multipref.add_argument("--groups", nargs="+", choices=["normal", "expert"], default=["normal", "expert"],
                           help="which annotator groups to keep (default both)")

    args = parser.parse_args(argv)
    return {"synthetic": _synthetic, "check": _check, "multipref": _multipref}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
