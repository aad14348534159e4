"""Worker for tests/model/test_attention.py (one process): tiny_llama (GQA, RoPE) built twice from
the same seed, with core_attention=sdpa and =unfused; per-pair log-prob sums and their gradients
for a padded and a packed micro-batch. Writes OUT/attention.json with the largest differences."""

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
    params = [p for p in chunk.parameters()]
    for param in params:
        param.requires_grad_(True)
    output = chunk(batch.tokens, batch.position_ids, batch.attention_mask)
    logps = pair_logprobs(output, batch, vocab)
    total = logps["chosen"].sum() - 0.5 * logps["rejected"].sum()
    grads = torch.autograd.grad(total, params)
    return torch.cat([logps["chosen"], logps["rejected"]]).detach(), grads


def main(out: Path) -> None:
    parallel = ParallelConfig(1, 1, 4, 4)
    sdpa = get_preset("tiny_llama")
    initialize_parallel(parallel, sdpa, seed=3)
    chunks = {name: build_reference(replace(sdpa, core_attention=name), parallel, seed=5)[0]
              for name in ("sdpa", "unfused")}
    result = {name: type(chunk.decoder.layers[0].self_attention.core_attention).__name__
              for name, chunk in chunks.items()}
    pairs = make_pairs(4, sdpa.vocab_size, seed=9)
    for packed in (False, True):
        (batch,) = micro_batches(pairs, 4, packed=packed)
        (a, grads_a), (b, grads_b) = (logps_and_grads(chunks[n], batch, sdpa.vocab_size)
                                      for n in ("sdpa", "unfused"))
        key = "packed" if packed else "padded"
        result[key] = {"logp_diff": float((a - b).abs().max()), "logp_scale": float(b.abs().max()),
                       "grad_diff": max(float((x - y).abs().max()) for x, y in zip(grads_a, grads_b)),
                       "grad_scale": max(float(y.abs().max()) for y in grads_b)}
    (out / "attention.json").write_text(json.dumps(result))
    destroy_parallel()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
