"""Run recipes.convert import/export tasks inside one torchrun world (TP * PP ranks).

Usage: convert_worker.py TP PP WORK TASK...   with TASK one of
    import:NAME      WORK/NAME (HF folder) -> WORK/NAME.tpTPppPP (weights checkpoint), verified
    export:CKPT:OUT  WORK/CKPT (checkpoint) -> WORK/OUT (HF folder), verified against the model
Logit tolerance 1e-5 (fp32); a failed task exits non-zero.
"""

import sys
from pathlib import Path

from recipes.convert import _parser, run_export, run_import

TOLERANCE = "1e-5"


def main(tp: str, pp: str, work: str, *tasks: str) -> None:
    work = Path(work)
    layout = ["--tp", tp, "--pp", pp, "--verify", "--tolerance", TOLERANCE]
    for task in tasks:
        kind, *names = task.split(":")
        if kind == "import":
            args = ["import", "--hf", work / names[0], "--out", work / f"{names[0]}.tp{tp}pp{pp}"]
            run = run_import
        else:
            args = ["export", "--checkpoint", work / names[0], "--out", work / names[1]]
            run = run_export
        code = run(_parser().parse_args([*map(str, args), *layout]))
        if code != 0:
            raise SystemExit(f"{task}: exit code {code}")


if __name__ == "__main__":
    main(*sys.argv[1:])
