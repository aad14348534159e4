"""Per-sequence log-prob sums over completion tokens, from vocabulary-parallel logits.

Chosen and rejected sequences of a micro-batch go through ONE forward (they are rows, or packed
segments of rows, of the same PreferenceBatch). Per-token log-probs of the labels come from
megatron's `vocab_parallel_cross_entropy`, which is stable under TP (max and sum-exp are
all-reduced over the TP group) and works IN PLACE on its fp32 input: the logits tensor becomes the
softmax saved for backward, so at most one full-vocabulary fp32 copy is alive (none is made when
the logits are already fp32). Logits of the padded vocabulary (ids >= the true vocabulary size,
added by megatron's make_vocab_size_divisible_by * TP padding) are set to -inf first, so
log-probs equal the unpadded model's (as in HF) and do not depend on the TP size.
"""

import torch


def mask_padded_vocab_(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """In place: -inf for this TP rank's logits columns whose global id is >= vocab_size."""
    from megatron.core import parallel_state

    partition = logits.shape[-1]
    start = parallel_state.get_tensor_model_parallel_rank() * partition
    first_padded = vocab_size - start
    if first_padded < partition:
        logits[..., max(first_padded, 0):] = float("-inf")
    return logits


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """log pi(labels) per position, [R, S], from this TP rank's logits shard [R, S, V/TP].

    Consumes `logits` (overwritten in place when fp32); pass a clone if you need them afterwards."""
    from megatron.core import tensor_parallel

    if logits.dtype != torch.float32:
        logits = logits.float()          # the one fp32 copy; the half-precision logits stay as they are
    mask_padded_vocab_(logits, vocab_size)
    return -tensor_parallel.vocab_parallel_cross_entropy(logits, labels)


def sequence_sums(token_logps: torch.Tensor, loss_mask: torch.Tensor, sequence_ids: torch.Tensor,
                  num_sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked per-sequence sums of `token_logps` and completion-token counts, both [num_sequences].

    Works for padded (one sequence per row) and packed (several per row) batches: positions are
    scattered by `sequence_ids` (-1 = padding); only positions with loss_mask > 0 count."""
    ids = sequence_ids.reshape(-1)
    mask = loss_mask.reshape(-1).to(token_logps.dtype)
    valid = (ids >= 0) & (mask > 0)
    if valid.any() and int(ids[valid].max()) >= num_sequences:
        raise ValueError(f"sequence_ids reach {int(ids[valid].max())} but the micro-batch has only "
                         f"{num_sequences} sequences (2 * num_pairs)")
    index = torch.where(valid, ids, torch.zeros_like(ids))
    weights = torch.where(valid, mask, torch.zeros_like(mask))
    sums = torch.zeros(num_sequences, dtype=token_logps.dtype, device=token_logps.device)
    # where(), not a product: a non-finite value at a padding position must not leak into a sum
    values = torch.where(valid, token_logps.reshape(-1) * weights, torch.zeros_like(weights))
    sums = sums.index_add(0, index, values)
    counts = torch.zeros(num_sequences, dtype=token_logps.dtype, device=token_logps.device)
    counts = counts.index_add(0, index, weights.detach())
    return sums, counts


def pair_logprobs(logits: torch.Tensor, batch, vocab_size: int) -> dict[str, torch.Tensor]:
    """{"chosen", "rejected", "chosen_tokens", "rejected_tokens"}, each [num_pairs], for the
    PreferenceBatch `batch` (sequence 2i = chosen of pair i, 2i + 1 = rejected)."""
    logps = token_logprobs(logits, batch.labels, vocab_size)
    sums, counts = sequence_sums(logps, batch.loss_mask, batch.sequence_ids, 2 * batch.num_pairs)
    return {"chosen": sums[0::2], "rejected": sums[1::2],
            "chosen_tokens": counts[0::2], "rejected_tokens": counts[1::2]}
