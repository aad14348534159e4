"""Padded and packed micro-batches: label/mask alignment and equal per-pair log-probs."""

import math

import pytest
import torch

from nemo_repo.data.batch import TokenizedPair, collate_padded
from nemo_repo.data.packing import Collator, collate_packed, pack_rows


class TinyCausalLM(torch.nn.Module):
    """Plain-torch transformer that honours position_ids and a [R, 1, S, S] (True = masked) mask."""

    def __init__(self, vocab=50, hidden=32, heads=4, layers=2, max_pos=128):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.pos = torch.nn.Embedding(max_pos, hidden)
        self.blocks = torch.nn.ModuleList(torch.nn.TransformerEncoderLayer(
            hidden, heads, 2 * hidden, dropout=0.0, batch_first=True) for _ in range(layers))
        self.heads = heads
        self.out = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens, position_ids, attention_mask):
        x = self.embed(tokens) + self.pos(position_ids)
        mask = attention_mask.repeat_interleave(self.heads, dim=0).squeeze(1)   # [R*h, S, S]
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.out(x)


def pair_logps(model, batch):
    logits = model(batch.tokens, batch.position_ids, batch.attention_mask)
    token = logits.log_softmax(-1).gather(-1, batch.labels[..., None])[..., 0]
    sums = torch.zeros(2 * batch.num_pairs, dtype=token.dtype)
    counts = torch.zeros(2 * batch.num_pairs)
    valid = batch.sequence_ids >= 0
    ids = batch.sequence_ids[valid]
    sums.index_add_(0, ids, (token * batch.loss_mask)[valid])
    counts.index_add_(0, ids, batch.loss_mask[valid])
    return sums, counts


def random_pairs(n, seed=0, vocab=50):
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        p, c, r = (torch.randint(1, 9, (1,), generator=g).item() for _ in range(3))
        draw = lambda k: torch.randint(1, vocab, (k,), generator=g).tolist()  # noqa: E731
        pairs.append(TokenizedPair(draw(p), draw(c), draw(r), i % 3, 100 + i))
    return pairs


def test_labels_and_loss_mask_follow_the_contract():
    pair = TokenizedPair([1, 2, 3], [4, 5], [6], 0, 7)
    batch = collate_padded([pair], pad_to_multiple_of=8)
    assert batch.tokens.shape == (2, 8) and batch.num_pairs == 1
    assert batch.tokens[0, :5].tolist() == [1, 2, 3, 4, 5]
    assert batch.labels[0, :5].tolist() == [2, 3, 4, 5, 0]
    # loss on positions whose label is a completion token: predicting 4 (pos 2) and 5 (pos 3)
    assert batch.loss_mask[0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    assert batch.loss_mask[1].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert batch.sequence_ids[1].tolist() == [1, 1, 1, 1, -1, -1, -1, -1]
    allowed = ~batch.attention_mask[1, 0]
    assert torch.equal(allowed[:4, :4], torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    assert not allowed[:4, 4:].any() and not allowed[4:, :4].any()
    assert torch.equal(allowed[4:, 4:], torch.eye(4, dtype=torch.bool))   # padding: itself only
    assert batch.pair_index.tolist() == [7] and batch.reference_chosen is None


def test_packed_rows_are_block_diagonal_and_keep_pairs_together():
    pairs = random_pairs(6, seed=1)
    batch = collate_packed(pairs, pack_length=40)
    assert batch.tokens.shape[1] == 40 and batch.tokens.shape[0] < 12
    for r in range(batch.tokens.shape[0]):
        ids = batch.sequence_ids[r]
        present = set(ids[ids >= 0].tolist())
        assert all((s ^ 1) in present for s in present), "chosen and rejected share a row"
        allowed = ~batch.attention_mask[r, 0]
        same = (ids[:, None] == ids[None, :]) & (ids[:, None] >= 0)
        causal = torch.tril(torch.ones_like(allowed))
        assert torch.equal(allowed & (ids[:, None] >= 0), same & causal)
        for s in present:          # positions restart at 0 for every sequence
            assert batch.position_ids[r, ids == s].tolist() == list(range(int((ids == s).sum())))


def test_packed_and_padded_give_equal_pair_logprobs():
    model = TinyCausalLM().eval()
    pairs = random_pairs(7, seed=2)
    with torch.no_grad():
        padded = pair_logps(model, collate_padded(pairs))
        packed_batch = collate_packed(pairs, pack_length=36)
        packed = pair_logps(model, packed_batch)
    assert packed_batch.tokens.shape[0] < 2 * len(pairs)
    for got, want in zip(packed, padded):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert padded[1].tolist() == [float(len(p.chosen if s % 2 == 0 else p.rejected))
                                  for p in pairs for s in (0, 1)]


def test_pack_rows_first_fit_and_overflow():
    assert pack_rows([5, 3, 4, 2], 7) == [[0, 3], [1, 2]]
    with pytest.raises(ValueError, match="more than the row length"):
        pack_rows([9], 8)


def test_padding_fraction_matches_the_tensors():
    pairs = random_pairs(8, seed=3)
    collator = Collator(packing=False, max_length=20, pack_length=40, pad_to_multiple_of=4)
    groups = [pairs[:4], pairs[4:]]
    lengths = [[p.lengths for p in g] for g in groups]
    for packing in (False, True):
        c = Collator(packing, 20, 40, 4)
        batches = [c(g) for g in groups]
        padding = sum(int((b.sequence_ids < 0).sum()) for b in batches)
        total = sum(b.sequence_ids.numel() for b in batches)
        assert math.isclose(collator.padding_fraction(lengths, packing), padding / total)


def test_reference_logps_are_carried_and_to_moves_tensors():
    pairs = [p._replace(reference_chosen=-1.5, reference_rejected=-2.0) for p in random_pairs(2)]
    batch = collate_padded(pairs).to("cpu")
    assert batch.reference_chosen.tolist() == [-1.5, -1.5]
    assert batch.reference_rejected.tolist() == [-2.0, -2.0]
