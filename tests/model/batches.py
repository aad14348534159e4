"""Tiny deterministic preference micro-batches for the model tests, collated by the data layer
(nemo_repo.data: padded one sequence per row, or packed several pairs per row)."""

from dataclasses import replace

import torch

from nemo_repo.data.batch import TokenizedPair, collate_padded
from nemo_repo.data.packing import collate_packed


def make_pairs(num_pairs: int, vocab: int, seed: int = 0, num_annotators: int = 3):
    """[TokenizedPair] with short random prompts and completions; annotator i % num_annotators."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(num_pairs):
        lengths = torch.randint(2, 6, (3,), generator=g).tolist()
        prompt, chosen, rejected = (torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths)
        pairs.append(TokenizedPair(prompt, chosen, rejected, i % num_annotators, i))
    return pairs


def micro_batches(pairs, micro_batch_size: int, dp_rank: int = 0, dp_size: int = 1, packed=False):
    """This DP rank's contiguous share of the global batch, split into micro-batches."""
    share = len(pairs) // dp_size
    mine = pairs[dp_rank * share:(dp_rank + 1) * share]
    chunks = [mine[i:i + micro_batch_size] for i in range(0, share, micro_batch_size)]
    if packed:
        return [collate_packed(chunk, pack_length=64, static=False) for chunk in chunks]
    return [collate_padded(chunk) for chunk in chunks]


def with_reference(batch, chosen, rejected):
    return replace(batch, reference_chosen=chosen, reference_rejected=rejected)
