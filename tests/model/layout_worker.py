"""Run 3 RE-DPO optimizer steps in one or several layouts and write the results as JSON.

Usage (under torchrun): layout_worker.py OUTDIR CASE [CASE ...],
CASE = tag:tp:pp:mbs[:packed][:distopt][:gpt] (distopt: the distributed optimizer; gpt: tiny_gpt
instead of tiny_llama).
Every case uses the same initial weights, the same 8-pair global batch and eta0/alpha; each rank
writes OUTDIR/<tag>.rank<r>.json (eta, metrics, and on DP rank 0 the per-pair outputs), then
evaluates once more with pairs on DP rank 0 only (the other DP ranks get an empty shard).
"""

import json
import sys
from pathlib import Path

import torch
from megatron.core import parallel_state

from nemo_repo.model.preference import PreferenceModel
from nemo_repo.model.parallel import ParallelConfig, initialize_parallel
from nemo_repo.model.policy import build_policy, build_reference
from nemo_repo.model.presets import get_preset
from nemo_repo.objectives import ObjectiveConfig, ReferenceMode, RobustConfig
from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState
from nemo_repo.training.optim import OptimConfig, build_optimizer, build_scheduler
from nemo_repo.training.step import StepRunner
from tests.model.batches import make_pairs, micro_batches

GLOBAL_BATCH = 8
STEPS = 3


def run_case(outdir: Path, tag: str, tp: int, pp: int, mbs: int, packed: bool, distopt: bool,
             model) -> None:
    parallel = ParallelConfig(tp, pp, mbs, GLOBAL_BATCH, use_distributed_optimizer=distopt)
    layout = initialize_parallel(parallel, model, seed=11)
    policy = build_policy(model, parallel, seed=7)
    reference = build_reference(model, parallel, seed=7)
    reliability = ReliabilityState(ReliabilityConfig(eta0=0.8, alpha=0.5),
                                   AnnotatorIndex(["a", "b", "c"]))
    runner = StepRunner(PreferenceModel(policy, model, ObjectiveConfig(name="dpo", beta=0.5),
                                        RobustConfig(mode="re")), ReferenceMode.MODEL, reliability, reference)
    optim = OptimConfig(lr=1e-2, clip_grad=1.0, warmup_steps=0, total_steps=STEPS, weight_decay=0.01,
                        use_distributed_optimizer=distopt)
    optimizer = build_optimizer(optim, policy)
    scheduler = build_scheduler(optim, optimizer)
    pairs = make_pairs(GLOBAL_BATCH, model.vocab_size, seed=3)
    batches = micro_batches(pairs, mbs, parallel_state.get_data_parallel_rank(), layout["dp"],
                            packed=packed)
    result = {"layout": layout, "steps": []}
    metrics0, pairs0 = runner.evaluate(batches)
    result["eval0"] = metrics0
    if pairs0 is not None:
        result["pairs0"] = {k: v.tolist() for k, v in pairs0.items()}
        result["eta_for0"] = reliability.eta_for(pairs0["annotator_index"]).tolist()
    for _ in range(STEPS):
        metrics = runner.train_step(batches, optimizer, scheduler).metrics
        result["steps"].append({**metrics, "eta": reliability.eta.tolist()})
    metrics_end, pairs_end = runner.evaluate(batches)
    result["eval_end"] = metrics_end
    if pairs_end is not None:
        result["pairs_end"] = {k: v.tolist() for k, v in pairs_end.items()}
    # only DP rank 0 has pairs (a validation split smaller than the DP size): no rank raises
    shard = batches if parallel_state.get_data_parallel_rank() == 0 else []
    metrics_dp0, pairs_dp0 = runner.evaluate(shard)
    result["eval_dp0_only"] = metrics_dp0
    if pairs_dp0 is not None:
        result["pairs_dp0_only"] = {k: v.tolist() for k, v in pairs_dp0.items()}
    rank = torch.distributed.get_rank()
    (outdir / f"{tag}.rank{rank}.json").write_text(json.dumps(result))


def main() -> None:
    outdir = Path(sys.argv[1])
    for case in sys.argv[2:]:
        tag, tp, pp, mbs, *flags = case.split(":")
        run_case(outdir, tag, int(tp), int(pp), int(mbs), "packed" in flags, "distopt" in flags,
                 get_preset("tiny_gpt" if "gpt" in flags else "tiny_llama"))


if __name__ == "__main__":
    main()
