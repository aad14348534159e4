"""Step-time overhead of RE-PO: train_step with robust mode "re" vs the same objective with
mode "none", for DPO (frozen reference model) and SimPO (no reference), on tiny_llama, CPU,
one process. Configurations alternate inside each repetition so drift (thermal, other load on
the machine) hits all of them alike; the ratio is computed per repetition and summarised by its
median and interquartile range.

    python -m benchmarks.step_overhead [--reps 30] [--warmup 3] [--json out.json]
"""

import argparse
import time

import torch

from nemo_repo.model.parallel import ParallelConfig, destroy_parallel, initialize_parallel
from nemo_repo.model.policy import build_policy, build_reference
from nemo_repo.model.preference import PreferenceModel
from nemo_repo.model.presets import get_preset
from nemo_repo.objectives import ObjectiveConfig, ReferenceMode, RobustConfig, resolve_reference_mode
from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState
from nemo_repo.training.optim import OptimConfig, build_optimizer
from nemo_repo.training.step import StepRunner
from nemo_repo.data.batch import TokenizedPair, collate_padded
from benchmarks.report import emit, quartiles


def make_batches(num_pairs: int, micro_batch_size: int, vocab: int, length: int, annotators: int):
    g = torch.Generator().manual_seed(0)
    pairs = []
    for i in range(num_pairs):
        prompt, chosen, rejected = (torch.randint(1, vocab, (length,), generator=g).tolist()
                                    for _ in range(3))
        pairs.append(TokenizedPair(prompt, chosen, rejected, i % annotators, i))
    return [collate_padded(pairs[i:i + micro_batch_size])
            for i in range(0, num_pairs, micro_batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=32, help="tokens per prompt / completion")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = get_preset("tiny_llama")
    parallel = ParallelConfig(micro_batch_size=args.micro_batch, global_batch_size=args.pairs)
    initialize_parallel(parallel, model, seed=0)
    policy, reference = build_policy(model, parallel, seed=0), build_reference(model, parallel, seed=0)
    optimizer = build_optimizer(OptimConfig(lr=1e-6, total_steps=1), policy)
    batches = make_batches(args.pairs, args.micro_batch, model.vocab_size, args.length, args.annotators)
    index = AnnotatorIndex([str(k) for k in range(args.annotators)])

    configs = {}
    for objective in ("dpo", "simpo"):
        for mode in ("none", "re"):
            obj = ObjectiveConfig(name=objective)
            reference_mode = resolve_reference_mode(obj)
            configs[(objective, mode)] = StepRunner(
                PreferenceModel(policy, model, obj, RobustConfig(mode=mode)), reference_mode,
                ReliabilityState(ReliabilityConfig(), index),
                reference if reference_mode is ReferenceMode.MODEL else None)
    times = {key: [] for key in configs}
    for rep in range(args.warmup + args.reps):
        for key, runner in configs.items():
            start = time.perf_counter()
            runner.train_step(batches, optimizer)
            elapsed = time.perf_counter() - start
            if rep >= args.warmup:
                times[key].append(elapsed)

    report = {"setup": {"model": model.name, "pairs_per_step": args.pairs,
                        "micro_batch": args.micro_batch, "tokens_per_sequence": 2 * args.length,
                        "reps": args.reps, "device": "cpu", "threads": torch.get_num_threads()},
              "step_ms": {f"{o}/{m}": {k: 1e3 * v for k, v in quartiles(t).items()}
                          for (o, m), t in times.items()},
              "re_over_none": {}}
    for objective in ("dpo", "simpo"):
        ratios = [re / none for re, none in zip(times[(objective, "re")], times[(objective, "none")])]
        report["re_over_none"][objective] = quartiles(ratios)
    destroy_parallel()
    emit(report, args.json)


if __name__ == "__main__":
    main()
