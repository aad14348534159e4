"""Sequence packing: several whole pairs per row, chosen and rejected of a pair side by side.

Rows have a fixed length `pack_length` (>= 2 * max_length, so any pair fits); pairs are placed
first-fit by decreasing length, which is deterministic. Sequence numbering is unchanged (2i chosen,
2i + 1 rejected of the micro-batch's pair i), position ids restart per sequence and the attention
mask is block-diagonal causal (batch.collate_rows), so a packed micro-batch gives the same per-pair
log-probs as the padded one.
"""

from typing import Sequence

from nemo_repo.data.batch import PreferenceBatch, TokenizedPair, collate_rows, round_up


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: lists of item indices whose lengths sum to <= capacity."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        if lengths[i] > capacity:
            raise ValueError(f"item {i} has {lengths[i]} tokens, more than the row length {capacity}")
        slot = next((r for r, space in enumerate(free) if space >= lengths[i]), None)
        if slot is None:
            rows.append([])
            free.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        free[slot] -= lengths[i]
    return [sorted(row) for row in rows]


def collate_packed(pairs: Sequence[TokenizedPair], pack_length: int,
                   pad_to_multiple_of: int = 1, static: bool = True) -> PreferenceBatch:
    """Pack the micro-batch's pairs into as few rows as possible. Rows are `pack_length` long
    when `static`, else as long as the fullest row (rounded up to `pad_to_multiple_of`)."""
    if not pairs:
        raise ValueError("cannot collate an empty micro-batch")
    pair_lengths = [sum(pair.lengths) for pair in pairs]
    rows = pack_rows(pair_lengths, pack_length)
    seq_len = pack_length if static else round_up(
        max(sum(pair_lengths[i] for i in row) for row in rows), pad_to_multiple_of)
    return collate_rows(pairs, [[s for i in row for s in (2 * i, 2 * i + 1)] for row in rows],
                        seq_len)
