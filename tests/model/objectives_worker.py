"""Single-process checks (under torchrun, 1 rank) written to OUTDIR/objectives.json:
token log-probs ignore the padded vocabulary; every objective x robust mode runs one optimizer step; SimPO/CPO run without any reference;
precomputed reference sums give the same Delta as the reference model; a missing reference is
reported; build_training builds a working stack (tiny_gpt); a bf16 model takes a step."""

import json
import math
import sys
from pathlib import Path

import torch

from nemo_repo.model.logprobs import token_logprobs
from nemo_repo.model.parallel import ParallelConfig, initialize_parallel
from nemo_repo.model.policy import build_policy, build_reference
from nemo_repo.model.preference import CompletionScorer, PreferenceModel
from nemo_repo.model.presets import get_preset
from nemo_repo.objectives import ObjectiveConfig, ReferenceMode, RobustConfig, resolve_reference_mode
from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState
from nemo_repo.training.build import build_training
from nemo_repo.training.optim import OptimConfig, build_optimizer
from nemo_repo.training.step import StepRunner, score_pairs
from tests.model.batches import make_pairs, micro_batches, with_reference

OBJECTIVES = ("dpo", "ipo", "simpo", "cpo")
MODES = ("none", "ls", "rdpo", "holder", "ropo", "re")
OPTIM = OptimConfig(lr=1e-3, total_steps=10)


def reliability() -> ReliabilityState:
    return ReliabilityState(ReliabilityConfig(), AnnotatorIndex(["a", "b", "c"]))


def params_vector(chunks) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for c in chunks for p in c.parameters()])


def main() -> None:
    out, results = Path(sys.argv[1]), {}
    model = get_preset("tiny_llama")
    parallel = ParallelConfig(micro_batch_size=2, global_batch_size=4)
    initialize_parallel(parallel, model, seed=1)
    policy, reference = build_policy(model, parallel, seed=3), build_reference(model, parallel, seed=3)
    batches = micro_batches(make_pairs(4, model.vocab_size, seed=5), 2)

    # per-token log-probs == log_softmax over the TRUE vocabulary (padded columns excluded)
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 5, model.padded_vocab_size(1), generator=g)
    labels = torch.randint(0, model.vocab_size, (2, 5), generator=g)
    expected = torch.log_softmax(logits[..., :model.vocab_size].double(), -1)
    expected = expected.gather(-1, labels[..., None])[..., 0]
    got = token_logprobs(logits.clone(), labels, model.vocab_size)
    results["token_logprobs_max_diff"] = float((got.double() - expected).abs().max())

    initial = [p.detach().clone() for c in policy for p in c.parameters()]
    for name in OBJECTIVES:
        for mode in MODES:
            with torch.no_grad():   # every combination starts from policy == reference (h = 0)
                for param, value in zip((p for c in policy for p in c.parameters()), initial):
                    param.copy_(value)
            objective = ObjectiveConfig(name=name)
            mode_of_reference = resolve_reference_mode(objective)
            runner = StepRunner(PreferenceModel(policy, model, objective, RobustConfig(mode=mode)),
                                mode_of_reference, reliability(),
                                reference if mode_of_reference is ReferenceMode.MODEL else None)
            before = params_vector(policy)
            metrics = runner.train_step(batches, build_optimizer(OPTIM, policy)).metrics
            results[f"{name}/{mode}"] = {
                "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                "moved": float((params_vector(policy) - before).abs().max()),
                "reference_mode": runner.reference_mode, "has_w": "w_mean" in metrics}

    # precomputed reference sums == the reference model's
    objective, robust = ObjectiveConfig(name="dpo"), RobustConfig(mode="re")
    preference = PreferenceModel(policy, model, objective, robust)
    _, with_model = StepRunner(preference, ReferenceMode.MODEL, reliability(), reference).evaluate(batches)
    ref_logps = score_pairs(CompletionScorer(reference, model), batches)
    offset, precomputed = 0, []
    for batch in batches:
        n = batch.num_pairs
        precomputed.append(with_reference(batch, ref_logps["chosen_logp"][offset:offset + n].float(),
                                          ref_logps["rejected_logp"][offset:offset + n].float()))
        offset += n
    runner = StepRunner(preference, ReferenceMode.PRECOMPUTED, reliability())
    _, from_sums = runner.evaluate(precomputed)
    results["precomputed"] = {"mode": runner.reference_mode,
                              "max_delta_diff": float((from_sums["delta"] - with_model["delta"]).abs().max()),
                              "max_abs_delta": float(with_model["delta"].abs().max())}
    try:
        runner.train_step(batches, build_optimizer(OPTIM, policy))
        results["missing_reference_error"] = None
    except ValueError as error:
        results["missing_reference_error"] = str(error)

    # one-call setup (tiny_gpt: LayerNorm, GeLU, biases, learned positions), then bf16
    for preset, dtype in (("tiny_gpt", "fp32"), ("tiny_llama", "bf16")):
        cfg = get_preset(preset, dtype=dtype)
        initialize_parallel(parallel, cfg, seed=2)
        stack = build_training(cfg, parallel, objective, robust, OPTIM, reliability(), seed=2)
        gpt_batches = micro_batches(make_pairs(4, cfg.vocab_size, seed=6), 2)
        steps = [stack.runner.train_step(gpt_batches, stack.optimizer, stack.scheduler).metrics
                 for _ in range(2)]
        results[f"build/{preset}/{dtype}"] = {
            "losses": [s["loss"] for s in steps], "grad_norms": [s["grad_norm"] for s in steps],
            "has_reference": stack.reference_chunks is not None,
            "sharded_keys": len(stack.model_chunks[0].sharded_state_dict())}
    (out / "objectives.json").write_text(json.dumps(results, default=lambda v: None if
                                                   isinstance(v, float) and math.isnan(v) else v))


if __name__ == "__main__":
    main()
