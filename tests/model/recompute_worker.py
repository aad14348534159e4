"""Worker for tests/model/test_recompute.py (one process): tiny_llama built twice from the same seed,
in training mode, with model.recompute=none and =full; per-pair log-prob sums and their gradients
for a padded and a packed micro-batch. Writes OUT/recompute.json with the largest differences."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from nemo_repo.model.logprobs import pair_logprobs
from nemo_repo.model.parallel import ParallelConfig, destroy_parallel, initialize_parallel
from nemo_repo.model.policy import build_reference
from nemo_repo.model.presets import get_preset
from tests.model.batches import make_pairs, micro_batches


def logps_and_grads(chunk, batch, vocab):
    """As attention_worker's, by .backward(): megatron's checkpointing refuses autograd.grad."""
    params = list(chunk.parameters())
    for param in params:
        param.requires_grad_(True)
        param.grad = None
    logps = pair_logprobs(chunk(batch.tokens, batch.position_ids, batch.attention_mask), batch, vocab)
    (logps["chosen"].sum() - 0.5 * logps["rejected"].sum()).backward()
    return torch.cat([logps["chosen"], logps["rejected"]]).detach(), [p.grad.clone() for p in params]


def main(out: Path) -> None:
    parallel = ParallelConfig(1, 1, 4, 4)
    model = get_preset("tiny_llama")
    initialize_parallel(parallel, model, seed=3)
    chunks = {name: build_reference(replace(model, recompute=name), parallel, seed=5)[0].train()
              for name in ("none", "full")}
    result = {name: chunk.config.recompute_granularity for name, chunk in chunks.items()}
    pairs = make_pairs(4, model.vocab_size, seed=9)
    for packed in (False, True):
        (batch,) = micro_batches(pairs, 4, packed=packed)
        (a, grads_a), (b, grads_b) = (logps_and_grads(chunks[n], batch, model.vocab_size)
                                      for n in ("full", "none"))
        result["packed" if packed else "padded"] = {
            "logp_diff": float((a - b).abs().max()), "logp_scale": float(b.abs().max()),
            "grad_diff": max(float((x - y).abs().max()) for x, y in zip(grads_a, grads_b)),
            "grad_scale": max(float(y.abs().max()) for y in grads_b)}
    (out / "recompute.json").write_text(json.dumps(result))
    destroy_parallel()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
