"""Sequence packing: several whole pairs per row, chosen and rejected of a pair side by side.

Rows have a fixed length `pack_length` (>= 2 * max_length, so any pair fits); pairs are placed
first-fit by decreasing length, which is deterministic. Sequence numbering is unchanged (2i chosen,
2i + 1 rejected of the micro-batch's pair i), position ids restart per sequence and the attention
mask is block-diagonal causal (batch.collate_rows), so a packed micro-batch gives the same per-pair
log-probs as the padded one.
"""

from dataclasses import dataclass
from typing import Iterable, Sequence

from nemo_repo.data.batch import (PreferenceBatch, TokenizedPair, collate_padded, collate_rows,
                                  round_up)


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


@dataclass(frozen=True)
class Collator:
    """Micro-batch collation as configured: padded (one sequence per row) or packed."""
    packing: bool = False
    max_length: int = 1024            # per sequence
    pack_length: int | None = None    # packed row length; default 2 * max_length
    pad_to_multiple_of: int = 1
    static_shapes: bool = False       # rows always max_length (padded) / pack_length (packed) long

    def __post_init__(self):
        if self.pack_length is not None and self.pack_length < 2 * self.max_length:
            raise ValueError(f"data.pack_length ({self.pack_length}) must be >= 2 * max_length "
                             f"({2 * self.max_length}) so that every pair fits in one row")
        if self.pad_to_multiple_of < 1:
            raise ValueError(f"data.pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")

    @property
    def row_length(self) -> int:
        return self.pack_length or 2 * self.max_length

    def __call__(self, pairs: Sequence[TokenizedPair]) -> PreferenceBatch:
        if self.packing:
            return collate_packed(pairs, self.row_length, self.pad_to_multiple_of, self.static_shapes)
        return collate_padded(pairs, self.pad_to_multiple_of,
                              self.max_length if self.static_shapes else None)

    def padding_fraction(self, groups: Iterable[Sequence[tuple[int, int]]], packing: bool) -> float:
        """Padding share of all [R, S] positions for micro-batches given as (chosen, rejected)
        sequence lengths per pair, collated padded (packing=False) or packed, without building
        tensors."""
        used = total = 0
        for lengths in groups:
            used += sum(c + r for c, r in lengths)
            if packing:
                pair_lengths = [c + r for c, r in lengths]
                rows = pack_rows(pair_lengths, self.row_length)
                width = self.row_length if self.static_shapes else round_up(
                    max(sum(pair_lengths[i] for i in row) for row in rows), self.pad_to_multiple_of)
                total += len(rows) * width
            else:
                width = self.max_length if self.static_shapes else round_up(
                    max(max(pair) for pair in lengths), self.pad_to_multiple_of)
                total += 2 * len(lengths) * width
        return 1.0 - used / total if total else 0.0
