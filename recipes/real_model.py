"""The real-model path end to end: Hugging Face -> Megatron -> RE-DPO on noisy pairs -> Hugging Face.

    python -m recipes.real_model [--out runs/real_model] [--rate 0.3] [--prompt "..."]
                                 [--reimport] [TRAIN_OVERRIDE ...]          # or: make real-model

Each stage runs an existing CLI in a subprocess; a table of stage timings closes the run.
  fetch     recipes.fetch_assets       SmolLM2-135M-Instruct + 300 dpo_en_demo pairs (cache; skips present ones)
  noise     recipes.inject_noise       --rate of the labels flipped (seeded) -> OUT/data
  import    recipes.convert import     --verify -> OUT/mcore (skipped once complete; --reimport redoes it)
  train     recipes.train              recipe=smollm2_cpu from OUT/mcore, whose recorded shape is the
                                       model (model.preset=null) -> OUT/train
  export    recipes.convert export     --verify, OUT/train/checkpoints -> OUT/hf
  generate  recipes.convert generate   greedy reply of OUT/hf reloaded with transformers
train, export and generate start from scratch on every run. TRAIN_OVERRIDEs (Hydra key=value, e.g.
train.max_steps=2) go to the train stage last. Exit code: the first failing stage's (0 when all pass).
"""

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nemo_repo.data.assets import DPO_DEMO, MARKER, SMOLLM2, default_cache_dir


@dataclass(frozen=True)
class Stage:
    name: str
    argv: tuple[str, ...]
    clean: Path | None = None      # removed before the stage runs (its previous output)
    skip: bool = False             # its output is complete from an earlier run
    done: Path | None = None       # marker written when the stage succeeds


def stages(out: Path, cache: Path, rate: float = 0.3, prompt: str | None = None,
           reimport: bool = False, overrides=()) -> list[Stage]:
    out = out.resolve()
    hf, pairs = cache / SMOLLM2["folder"], cache / DPO_DEMO["folder"] / "train.jsonl"
    data, mcore, run, exported = out / "data", out / "mcore", out / "train", out / "hf"
    imported = mcore / MARKER

    def module(name, *args):
        return (sys.executable, "-m", name, *map(str, args))

    return [
        Stage("fetch", module("recipes.fetch_assets", "--cache-dir", cache)),
        Stage("noise", module("recipes.inject_noise", "--input", pairs, "--out", data, "--rate", rate)),
        Stage("import", module("recipes.convert", "import", "--hf", hf, "--out", mcore, "--verify"),
              clean=mcore, skip=imported.is_file() and not reimport, done=imported),
        Stage("train", module("recipes.train", "recipe=smollm2_cpu", f"run.dir={run}", "model.preset=null",
                              f"model.init_from={mcore}", f"data.train={data / 'train.jsonl'}",
                              f"data.tokenizer={hf}", *overrides), clean=run),
        Stage("export", module("recipes.convert", "export", "--checkpoint", run / "checkpoints",
                               "--out", exported, "--verify"), clean=exported),
        Stage("generate", module("recipes.convert", "generate", "--hf", exported,
                                 *(("--prompt", prompt) if prompt else ()))),
    ]


def run_stages(plan: list[Stage], call=subprocess.call) -> int:
    """Run the stages in order, stop at the first failure; print a timing table."""
    timings, status = [], 0
    for stage in plan:
        if stage.skip:
            print(f"=== {stage.name}: complete from an earlier run, skipped", flush=True)
            timings.append((stage.name, "skipped"))
            continue
        print(f"=== {stage.name}: {' '.join(stage.argv)}", flush=True)
        if stage.clean is not None:
            shutil.rmtree(stage.clean, ignore_errors=True)
        start = time.perf_counter()
        status = call(list(stage.argv))
        timings.append((stage.name, f"{time.perf_counter() - start:.1f} s" + (f" (exit {status})" if status else "")))
        if status:
            break
        if stage.done is not None:
            stage.done.write_text("")
    print("\n| stage | time |\n|---|---|\n" + "\n".join(f"| {name} | {took} |" for name, took in timings))
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/real_model"))
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"asset cache (default $NEMO_REPO_CACHE or {default_cache_dir()})")
    parser.add_argument("--rate", type=float, default=0.3, help="share of labels flipped")
    parser.add_argument("--prompt", default=None, help="generation prompt (default: the CLI's)")
    parser.add_argument("--reimport", action="store_true", help="convert the HF model again")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the train stage")
    args = parser.parse_args(argv)
    plan = stages(args.out, args.cache_dir or default_cache_dir(), args.rate, args.prompt, args.reimport,
                  args.overrides)
    return run_stages(plan)


if __name__ == "__main__":
    sys.exit(main())
