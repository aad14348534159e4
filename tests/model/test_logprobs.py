"""sequence_sums: masked per-sequence sums and counts for padded and packed rows (pure torch)."""

import pytest
import torch

from nemo_repo.model.logprobs import sequence_sums
from tests.model.batches import make_pairs, micro_batches


def _reference_sums(batch, token_logps):
    """Loop version: for each sequence, sum token log-probs where loss_mask is 1."""
    sums = torch.zeros(2 * batch.num_pairs, dtype=torch.float64)
    counts = torch.zeros_like(sums)
    for r in range(batch.tokens.shape[0]):
        for s in range(batch.tokens.shape[1]):
            seq = int(batch.sequence_ids[r, s])
            if seq >= 0 and batch.loss_mask[r, s] > 0:
                sums[seq] += float(token_logps[r, s])
                counts[seq] += 1
    return sums, counts


@pytest.mark.parametrize("packed", [False, True])
def test_sums_and_counts_match_loop(packed):
    pairs = make_pairs(6, 50, seed=1)
    (batch,) = micro_batches(pairs, 6, packed=packed)
    token_logps = -torch.rand(batch.tokens.shape, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64)
    token_logps[batch.sequence_ids < 0] = float("nan")    # padding never leaks into a sum
    sums, counts = sequence_sums(token_logps, batch.loss_mask, batch.sequence_ids, 12)
    expected_sums, expected_counts = _reference_sums(batch, token_logps)
    torch.testing.assert_close(sums, expected_sums)
    torch.testing.assert_close(counts, expected_counts)
    # counts = completion lengths (chosen then rejected per pair)
    lengths = [n for p in pairs for n in (len(p.chosen), len(p.rejected))]
    assert counts.tolist() == lengths


def test_padded_and_packed_agree_and_gradient_flows():
    pairs = make_pairs(4, 50, seed=2)
    (padded,), (packed,) = micro_batches(pairs, 4), micro_batches(pairs, 4, packed=True)
    values = {}
    for name, batch in (("padded", padded), ("packed", packed)):
        # the same per-token value for the same (sequence, offset) in both layouts
        offset = torch.zeros_like(batch.sequence_ids)
        for r in range(batch.tokens.shape[0]):
            for seq in batch.sequence_ids[r].unique():
                where = (batch.sequence_ids[r] == seq).nonzero()[:, 0]
                offset[r, where] = torch.arange(len(where))
        token = (batch.sequence_ids * 100 + offset).double().requires_grad_()
        sums, _ = sequence_sums(token, batch.loss_mask, batch.sequence_ids, 8)
        sums.sum().backward()
        assert torch.equal(token.grad, ((batch.loss_mask > 0) & (batch.sequence_ids >= 0)).double())
        values[name] = sums.detach()
    torch.testing.assert_close(values["padded"], values["packed"])


def test_sequence_ids_beyond_pairs_rejected():
    (batch,) = micro_batches(make_pairs(2, 50), 2)
    with pytest.raises(ValueError, match="sequence_ids reach 3 but the micro-batch has only 2 sequences"):
        sequence_sums(torch.zeros(batch.tokens.shape), batch.loss_mask, batch.sequence_ids, 2)
