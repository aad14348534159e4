"""Core attention on megatron's local spec: torch SDPA (model.core_attention=sdpa) vs megatron's
unfused DotProductAttention, one SimPO train_step (forward + backward + optimizer) on a
SmolLM2-135M-shaped model cut to a few layers, CPU, one process. Step time: the two alternate
inside each repetition (median ratio and IQR); peak RSS: each in its own child process.

    python -m benchmarks.attention [--reps 10] [--layers 4] [--length 256] [--json out.json]
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch

from benchmarks.report import emit, quartiles
from benchmarks.step_overhead import make_batches
from nemo_repo.model.parallel import ParallelConfig, destroy_parallel, initialize_parallel
from nemo_repo.model.policy import build_policy
from nemo_repo.model.preference import PreferenceModel
from nemo_repo.model.presets import get_preset
from nemo_repo.objectives import ObjectiveConfig, ReferenceMode, RobustConfig
from nemo_repo.training.optim import OptimConfig, build_optimizer
from nemo_repo.training.step import StepRunner

CHOICES = ("sdpa", "unfused")


def setup(args, choices):
    model = get_preset("smollm2_135m", num_layers=args.layers)
    parallel = ParallelConfig(micro_batch_size=args.micro_batch, global_batch_size=args.pairs)
    initialize_parallel(parallel, model, seed=0)
    batches = make_batches(args.pairs, args.micro_batch, model.vocab_size, args.length, 1)
    steps = {}
    for choice in choices:
        policy = build_policy(replace(model, core_attention=choice), parallel, seed=0)
        runner = StepRunner(PreferenceModel(policy, model, ObjectiveConfig(name="simpo"), RobustConfig()),
                            ReferenceMode.NONE)
        optimizer = build_optimizer(OptimConfig(lr=1e-6, total_steps=1), policy)
        steps[choice] = lambda r=runner, o=optimizer: r.train_step(batches, o)
    return model, steps


def peak_rss_mb(args, choice) -> float:
    """Peak RSS of a child process that builds one model and takes `--warmup + 2` steps."""
    command = [sys.executable, "-m", "benchmarks.attention", "--only", choice, *_shape_args(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _shape_args(args):
    return ["--layers", str(args.layers), "--length", str(args.length), "--pairs", str(args.pairs),
            "--micro-batch", str(args.micro_batch), "--warmup", str(args.warmup)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--length", type=int, default=256, help="tokens per prompt / completion")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=CHOICES, help=argparse.SUPPRESS)   # child: print peak RSS
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.only:
        _, steps = setup(args, [args.only])
        for _ in range(args.warmup + 2):
            steps[args.only]()
        destroy_parallel()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return

    peak = {c: peak_rss_mb(args, c) for c in CHOICES}   # before this process starts a world of one
    model, steps = setup(args, CHOICES)
    times = {choice: [] for choice in CHOICES}
    for rep in range(args.warmup + args.reps):
        for choice, step in steps.items():
            start = time.perf_counter()
            step()
            if rep >= args.warmup:
                times[choice].append(time.perf_counter() - start)
    destroy_parallel()
    tokens = 2 * args.pairs * 2 * args.length
    report = {"setup": {"model": f"{model.name} cut to {args.layers} layers", "pairs_per_step": args.pairs,
                        "tokens_per_sequence": 2 * args.length, "reps": args.reps,
                        "threads": args.threads, "device": "cpu"},
              "step_ms": {c: {k: 1e3 * v for k, v in quartiles(t).items()} for c, t in times.items()},
              "tokens_per_s": {c: tokens / statistics.median(t) for c, t in times.items()},
              "sdpa_over_unfused_time": quartiles([a / b for a, b in zip(times["sdpa"], times["unfused"])]),
              "peak_rss_mb": peak}
    emit(report, args.json)


if __name__ == "__main__":
    main()
