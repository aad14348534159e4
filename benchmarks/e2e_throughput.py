"""End-to-end DPO training on the real model: tokens/s, peak RSS, launch and end-of-run time.

Runs `python -m recipes.train` on SmolLM2-135M-Instruct (the asset cache, recipes/fetch_assets.py)
and the first --pairs pairs of the llamafactory demo set that fit in --max-length untruncated
(chat template; the next 4 are the validation split), plain DPO
(beta 0.1), micro-batch 2 x 2 micro-batches (global 4), lr 1e-6, one process with --threads
threads, as subprocesses, for each reference mode (online: the frozen model forward every step;
precomputed: sums written first by recipes.precompute_reference) and each batching (padded rows,
packed rows). With --trl-python, HF TRL's DPOTrainer on the same weights, pairs and settings
(benchmarks/trl_dpo.py, run by that interpreter: TRL is never a dependency of this project)
alternates with ours, so that both see the same machine load.

Per run:
  tokens/s       non-padding prompt + completion tokens of chosen and rejected fed to the policy,
                 per second of optimizer steps, over the epochs after --warmup-epochs (each
                 framework counts the tokens of its own tokenization; every pair is trained once
                 per epoch: --pairs must be a multiple of the global batch)
  s/step         mean wall time of those steps
  peak RSS       the process's resident high-water mark (wait4 rusage, the whole run)
  launch         process start to the start of the first optimizer step
  end of run     end of the last optimizer step to process exit (final evaluation, checkpoint,
                 output files); also relative to one epoch's training time
Each framework's step times come from its own per-step record (metrics.jsonl); the launch and end
times from when those records appear (polled every 50 ms).

    python -m benchmarks.e2e_throughput                       # quick: 4 pairs, 256 tokens, 3 epochs
    python -m benchmarks.e2e_throughput --pairs 20 --max-length 512 --epochs 3 --repeats 2 \\
        --trl-python /work/trl-venv/bin/python                # the issue's setting (#14), ~1 h on 2 cores
    python -m benchmarks.e2e_throughput --modes online --batching padded --set model.dtype=bf16
                                                              # one lever: extra train overrides
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import emit, quartiles
from nemo_repo.data.assets import MARKER, default_cache_dir, fetch_dpo_demo, fetch_smollm2

MICRO_BATCH, GLOBAL_BATCH, BETA, LR = 2, 4, 0.1, 1e-6
POLL_S = 0.05


def fitting_rows(demo: Path, hf: Path, max_length: int, wanted: int) -> list[str]:
    """The first `wanted` rows whose chosen and rejected sequences (chat template) fit in max_length
    untruncated: both frameworks then train on the same token sequences (TRL drops a pair whose
    prompt alone reaches max_length, ours keeps it truncated)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf))
    rows = []
    for line in demo.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if max(len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True))
               for side in ("chosen", "rejected")) <= max_length:
            rows.append(line)
            if len(rows) == wanted:
                return rows
    raise SystemExit(f"error: {demo} has {len(rows)} pairs that fit in --max-length {max_length}, "
                     f"fewer than {wanted} (--pairs + validation)")


def prepare(out: Path, cache: Path, pairs: int, validation_pairs: int, max_length: int) -> dict:
    """Assets (fetched / imported once), the benchmark's train and validation files."""
    hf = fetch_smollm2(cache)
    demo = fetch_dpo_demo(cache) / "train.jsonl"
    mcore = out / "mcore"
    if not (mcore / MARKER).is_file():
        subprocess.run([sys.executable, "-m", "recipes.convert", "import", "--hf", str(hf), "--out", str(mcore)],
                       check=True)
        (mcore / MARKER).write_text("")
    rows = fitting_rows(demo, hf, max_length, pairs + validation_pairs)
    data = out / f"data_{pairs}_{max_length}"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("\n".join(rows[:pairs]) + "\n", encoding="utf-8")
    (data / "validation.jsonl").write_text("\n".join(rows[pairs:pairs + validation_pairs]) + "\n",
                                           encoding="utf-8")
    return {"hf": hf, "mcore": mcore, "train": data / "train.jsonl", "validation": data / "validation.jsonl"}


def train_overrides(paths: dict, max_length: int, steps: int) -> list[str]:
    """The issue's setting as recipes.train overrides (recipe smollm2_cpu, plain DPO)."""
    return ["recipe=smollm2_cpu", "model.preset=null", f"model.init_from={paths['mcore']}",
            f"data.train={paths['train']}", f"data.validation={paths['validation']}",
            "data.validation_fraction=0", f"data.tokenizer={paths['hf']}", f"data.max_length={max_length}",
            "robust=none", "objective=dpo", f"objective.beta={BETA}", f"optim.lr={LR}",
            "optim.warmup_ratio=0", f"parallel.micro_batch_size={MICRO_BATCH}",
            f"parallel.global_batch_size={GLOBAL_BATCH}", f"train.max_steps={steps}",
            "train.eval_interval=0", "checkpoint.interval=0", "logging.tensorboard=false",
            "logging.progress=false", "logging.eta_log_interval=0"]


def tokens_per_epoch(paths: dict, max_length: int) -> int:
    """Non-padding prompt + completion tokens of chosen and rejected over the training pairs, as our
    pipeline tokenizes them (the same cache recipes.train reads)."""
    from nemo_repo.data.pipeline import build_data_config, PreferenceData

    config = build_data_config({"train": str(paths["train"]), "tokenizer": str(paths["hf"]),
                                "max_length": max_length})
    return int(PreferenceData(config, MICRO_BATCH, GLOBAL_BATCH).splits["train"].lengths().sum())


def precompute(paths: dict, out: Path, max_length: int, env: dict) -> dict:
    """Reference sums for model.reference=precomputed; returns paths pointing at those files."""
    ref = out / f"reference_{paths['train'].parent.name}"
    if not (ref / "reference_logps.json").is_file():
        subprocess.run([sys.executable, "-m", "recipes.precompute_reference",
                        *train_overrides(paths, max_length, 1), f"+out={ref}"], check=True, env=env)
    return {**paths, "train": ref / "train.jsonl", "validation": ref / "validation.jsonl"}


def measure(command: list[str], metrics: Path, log: Path, env: dict) -> dict:
    """Run `command`; per optimizer step the time its record appeared in `metrics`; peak RSS."""
    metrics.unlink(missing_ok=True)
    arrivals, records, seen = [], [], 0
    with open(log, "w") as handle:
        launched = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            now = time.perf_counter()
            if metrics.is_file():
                lines = metrics.read_text(encoding="utf-8").splitlines()
                for line in lines[seen:]:
                    if not line.endswith("}"):
                        break   # partly written: read again next time
                    record = json.loads(line)
                    seen += 1
                    if record.get("split") == "train":
                        records.append(record)
                        arrivals.append(now)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                break
            time.sleep(POLL_S)
        exited = time.perf_counter()
    if process.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {process.returncode}; {log}:\n" + "\n".join(tail))
    return {"step_s": [r["time/step_s"] for r in records],
            "launch_s": arrivals[0] - records[0]["time/step_s"] - launched,
            "end_s": exited - arrivals[-1], "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}


def summarise(run: dict, tokens: int, steps_per_epoch: int, warmup_epochs: int) -> dict:
    steady = run["step_s"][warmup_epochs * steps_per_epoch:]
    epochs = len(steady) / steps_per_epoch
    epoch_s = sum(steady) / epochs
    return {"tokens_per_s": tokens * epochs / sum(steady), "s_per_step": sum(steady) / len(steady),
            "peak_rss_gb": run["peak_rss_gb"], "launch_s": run["launch_s"], "end_of_run_s": run["end_s"],
            "end_over_epoch": run["end_s"] / epoch_s, "tokens_per_epoch": tokens}


def trl_tokens(run_dir: Path, pairs: int) -> int:
    counted = json.loads((run_dir / "tokens.json").read_text())
    if counted["pairs"] != pairs:   # its epochs would be shorter than ours
        raise SystemExit(f"error: TRL kept {counted['pairs']} of {pairs} pairs (a prompt reaches "
                         f"--max-length): raise --max-length")
    return counted["tokens_per_epoch"]


def ours_command(paths: dict, args, steps: int, packed: bool, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "recipes.train", *train_overrides(paths, args.max_length, steps),
            f"data.packing={str(packed).lower()}", f"run.dir={run_dir}", *args.set]


def trl_command(paths: dict, args, precomputed: bool, run_dir: Path) -> list[str]:
    return [args.trl_python, str(Path(__file__).with_name("trl_dpo.py")), "--model", str(paths["hf"]),
            "--train", str(paths["train"]), "--out", str(run_dir), "--max-length", str(args.max_length),
            "--epochs", str(args.epochs), "--beta", str(BETA), "--lr", str(LR),
            "--micro-batch", str(MICRO_BATCH), "--accumulation", str(GLOBAL_BATCH // MICRO_BATCH),
            "--threads", str(args.threads), *(["--precompute-ref"] if precomputed else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="training pairs (a multiple of 4)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup-epochs", type=int, default=1, help="epochs left out of tokens/s")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (alternating)")
    parser.add_argument("--modes", nargs="+", choices=("online", "precomputed"), default=["online", "precomputed"])
    parser.add_argument("--batching", nargs="+", choices=("padded", "packed"), default=["padded", "packed"])
    parser.add_argument("--threads", type=int, default=2, help="OMP / MKL threads of every run")
    parser.add_argument("--trl-python", help="interpreter with trl installed: also run TRL's DPOTrainer")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra recipes.train overrides (a lever to measure)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_e2e"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.pairs % GLOBAL_BATCH or args.epochs <= args.warmup_epochs:
        parser.error(f"--pairs must be a multiple of {GLOBAL_BATCH} and --epochs > --warmup-epochs")
    out = args.out.resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    paths = prepare(out, args.cache_dir or default_cache_dir(), args.pairs, 4, args.max_length)
    steps_per_epoch = args.pairs // GLOBAL_BATCH
    steps = steps_per_epoch * args.epochs
    ours_tokens = tokens_per_epoch(paths, args.max_length)
    by_mode = {"online": paths}
    if "precomputed" in args.modes:
        by_mode["precomputed"] = precompute(paths, out, args.max_length, env)

    configs = [("ours", mode, batching) for mode in args.modes for batching in args.batching]
    if args.trl_python:
        configs += [("trl", mode, "padded") for mode in args.modes]
    runs: dict[tuple, list] = {config: [] for config in configs}
    for repeat in range(args.repeats):
        for config in sorted(configs, key=lambda c: (c[1], c[2], c[0])):   # ours and TRL alternate
            framework, mode, batching = config
            run_dir = out / "runs" / f"{framework}_{mode}_{batching}"
            if framework == "ours":
                command = ours_command(by_mode[mode], args, steps, batching == "packed", run_dir)
            else:
                command = trl_command(paths, args, mode == "precomputed", run_dir)
            load = os.getloadavg()[0]
            shutil.rmtree(run_dir, ignore_errors=True)   # a fresh run: no checkpoint to resume from
            run_dir.mkdir(parents=True)
            measured = measure(command, run_dir / "metrics.jsonl", out / "runs" / f"{run_dir.name}.log", env)
            tokens = ours_tokens if framework == "ours" else trl_tokens(run_dir, args.pairs)
            result = {**summarise(measured, tokens, steps_per_epoch, args.warmup_epochs),
                      "load_1min_before": load, "load_1min_after": os.getloadavg()[0]}
            runs[config].append(result)
            print(f"[{repeat + 1}/{args.repeats}] {framework} {mode} {batching}: "
                  + ", ".join(f"{k}={v:.3g}" for k, v in result.items()), file=sys.stderr, flush=True)

    rows = []
    for (framework, mode, batching), results in runs.items():
        row = {"framework": framework, "reference": mode, "batching": batching, "runs": len(results)}
        for key in results[0]:
            values = [r[key] for r in results]
            row[key] = quartiles(values)["median"] if len(values) > 1 else values[0]
        rows.append(row)
    trl = {r["reference"]: r for r in rows if r["framework"] == "trl"}
    for row in rows:
        if row["framework"] == "ours" and row["reference"] in trl:
            ref = trl[row["reference"]]
            row["vs_trl"] = {"tokens_per_s": row["tokens_per_s"] / ref["tokens_per_s"],
                             "peak_rss": row["peak_rss_gb"] / ref["peak_rss_gb"],
                             "launch": row["launch_s"] / ref["launch_s"]}
    emit({"setting": {"pairs": args.pairs, "max_length": args.max_length, "epochs": args.epochs,
                      "warmup_epochs": args.warmup_epochs, "threads": args.threads, "extra": args.set,
                      "micro_batch": MICRO_BATCH, "global_batch": GLOBAL_BATCH, "beta": BETA, "lr": LR,
                      "cpus": os.cpu_count()},
          "results": rows, "runs": {" ".join(k): v for k, v in runs.items()}}, args.json)


if __name__ == "__main__":
    main()
