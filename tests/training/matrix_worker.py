"""Every objective x robust mode, plus reliability.update=epoch and model.reference=precomputed,
as tiny training runs one after another in this one process (imports and the checkpoint writer
are paid once). Usage: matrix_worker.py OUT CACHE; run directories go to OUT/<name>, and
OUT/summary.json maps each name to its exit code or its error."""

import json
import os
import sys
import traceback
from pathlib import Path

from nemo_repo.training.loop import run_training
from nemo_repo.training.reference import precompute_reference
from recipes.precompute_reference import training_overrides
from tests.dist import LAUNCHER_VARS
from tests.recipes.test_recipes import settings_for
from tests.training.runs import tiny

OBJECTIVES = ("dpo", "ipo", "simpo", "cpo")
MODES = ("none", "ls", "rdpo", "holder", "ropo", "re")
# 64 pairs, 32 per step: the exact M-step runs at the ends of epochs, steps 2 and 4
EXTRA = {"dpo-re-epoch": ["objective=dpo", "robust=re", "reliability.update=epoch",
                          "parallel.global_batch_size=32"]}
PRECOMPUTED = "dpo-re-precomputed"


def matrix() -> dict[str, list[str]]:
    runs = {f"{o}-{m}": [f"objective={o}", f"robust={m}"] for o in OBJECTIVES for m in MODES}
    return {**runs, **EXTRA}


def fresh_world() -> None:
    """Each run initialises its own world of one on a new port (the last one may still be held)."""
    for key in LAUNCHER_VARS:
        os.environ.pop(key, None)


def run(out: Path, cache: Path, name: str, overrides: list[str]):
    fresh_world()
    try:
        return run_training(settings_for(*tiny(out / name, cache, *overrides)))
    except Exception:
        return traceback.format_exc()


def main(out: Path, cache: Path) -> None:
    summary = {name: run(out, cache, name, overrides) for name, overrides in matrix().items()}
    fresh_world()
    base = settings_for(*tiny(out / "unused", cache, "objective=dpo", "robust=re"))
    record = precompute_reference(base, out / "reference")
    overrides = training_overrides(str(out / "reference"), base, record)
    summary[PRECOMPUTED] = run(out, cache, PRECOMPUTED, ["objective=dpo", "robust=re", *overrides])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":   # dist_checkpointing starts a spawn Manager: keep work behind this guard
    main(Path(sys.argv[1]), Path(sys.argv[2]))
