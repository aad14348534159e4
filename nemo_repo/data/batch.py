"""PreferenceBatch (what the model consumes) and the collation of tokenized pairs into one.

A pair gives two sequences, prompt + chosen (sequence 2i) and prompt + rejected (2i + 1). Padded
collation puts one sequence per row; packed collation (see packing.py) puts several whole pairs
per row. Either way, for a sequence t_0 .. t_{n-1} whose first p tokens are the prompt:

* labels[s] = t_{s+1} for s < n - 1, and 0 at the sequence's last position and on padding;
* loss_mask[s] = 1 exactly for s = p-1 .. n-2, i.e. where the label is a completion token (the
  completion includes the EOS / end-of-turn tokens the tokenizer step appended, see tokenize.py);
  so the loss-masked label count equals the completion length n - p;
* position_ids restart at 0 for every sequence (0 on padding);
* attention_mask (True = masked) is causal inside each sequence and masks everything across
  sequences; a padding position attends only to itself, which keeps every softmax row finite
  (its output is never read: its label is 0 and its loss_mask 0).
"""

from dataclasses import dataclass, fields, replace
from typing import NamedTuple, Sequence

import torch


class TokenizedPair(NamedTuple):
    """One tokenized preference pair; `prompt` is the shared prefix of both sequences."""
    prompt: Sequence[int]
    chosen: Sequence[int]             # completion tokens only
    rejected: Sequence[int]
    annotator_index: int
    pair_index: int                   # row of the pair in its split
    reference_chosen: float | None = None
    reference_rejected: float | None = None

    @property
    def lengths(self) -> tuple[int, int]:
        return len(self.prompt) + len(self.chosen), len(self.prompt) + len(self.rejected)


@dataclass
class PreferenceBatch:
    """One micro-batch (field meanings: the module docstring)."""
    tokens: torch.Tensor              # long [R, S]
    labels: torch.Tensor              # long [R, S]
    loss_mask: torch.Tensor           # float [R, S]
    position_ids: torch.Tensor        # long [R, S]
    sequence_ids: torch.Tensor        # long [R, S], -1 = padding
    attention_mask: torch.Tensor      # bool [R, 1, S, S], True = masked
    num_pairs: int
    annotator_index: torch.Tensor     # long [B]
    pair_index: torch.Tensor          # long [B]
    reference_chosen: torch.Tensor | None = None    # float [B]
    reference_rejected: torch.Tensor | None = None

    def to(self, device, non_blocking: bool = False) -> "PreferenceBatch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=non_blocking)
        return replace(self, **moved)

    @property
    def padding_fraction(self) -> float:
        """Share of the [R, S] positions that hold no sequence."""
        return float((self.sequence_ids < 0).float().mean()) if self.sequence_ids.numel() else 0.0


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def collate_rows(pairs: Sequence[TokenizedPair], rows: Sequence[Sequence[int]],
                 seq_len: int) -> PreferenceBatch:
    """Build a PreferenceBatch whose row r holds the sequences `rows[r]` back to back (sequence
    2i = prompt + chosen of pairs[i], 2i + 1 = prompt + rejected), right-padded to `seq_len`."""
    R, S = len(rows), seq_len
    tokens = torch.zeros(R, S, dtype=torch.long)
    labels = torch.zeros(R, S, dtype=torch.long)
    loss_mask = torch.zeros(R, S, dtype=torch.float32)
    position_ids = torch.zeros(R, S, dtype=torch.long)
    sequence_ids = torch.full((R, S), -1, dtype=torch.long)
    allowed = torch.zeros(R, 1, S, S, dtype=torch.bool)
    causal = torch.tril(torch.ones(S, S, dtype=torch.bool))
    for r, row in enumerate(rows):
        start = 0
        for sequence in row:
            pair = pairs[sequence // 2]
            completion = pair.rejected if sequence % 2 else pair.chosen
            ids = torch.as_tensor([*pair.prompt, *completion], dtype=torch.long)
            n, p = len(ids), len(pair.prompt)
            end = start + n
            if end > S:
                raise ValueError(f"row {r} needs {end} positions but seq_len is {S}")
            tokens[r, start:end] = ids
            labels[r, start:end - 1] = ids[1:]
            loss_mask[r, start + p - 1:end - 1] = 1.0
            position_ids[r, start:end] = torch.arange(n)
            sequence_ids[r, start:end] = sequence
            allowed[r, 0, start:end, start:end] = causal[:n, :n]
            start = end
        padding = torch.arange(start, S)
        allowed[r, 0, padding, padding] = True
    references = [(p.reference_chosen, p.reference_rejected) for p in pairs]
    has_reference = bool(pairs) and all(c is not None and j is not None for c, j in references)
    return PreferenceBatch(
        tokens=tokens, labels=labels, loss_mask=loss_mask, position_ids=position_ids,
        sequence_ids=sequence_ids, attention_mask=~allowed, num_pairs=len(pairs),
        annotator_index=torch.tensor([p.annotator_index for p in pairs], dtype=torch.long),
        pair_index=torch.tensor([p.pair_index for p in pairs], dtype=torch.long),
        reference_chosen=torch.tensor([c for c, _ in references]) if has_reference else None,
        reference_rejected=torch.tensor([j for _, j in references]) if has_reference else None)


def collate_padded(pairs: Sequence[TokenizedPair], pad_to_multiple_of: int = 1,
                   seq_len: int | None = None) -> PreferenceBatch:
    """One sequence per row (2B rows, chosen then rejected); S = the longest sequence rounded up
    to `pad_to_multiple_of`, or exactly `seq_len` when given (static shapes)."""
    if not pairs:
        raise ValueError("cannot collate an empty micro-batch")
    longest = max(max(pair.lengths) for pair in pairs)
    S = seq_len if seq_len is not None else round_up(longest, pad_to_multiple_of)
    return collate_rows(pairs, [[s] for s in range(2 * len(pairs))], S)
