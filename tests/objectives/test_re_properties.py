"""Identities of the RE objective, gradients against finite differences, and numerical extremes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_repo.objectives import ObjectiveConfig, RobustConfig, SequenceLogProbs, preference_loss
from nemo_repo.objectives.base import base_terms
from nemo_repo.objectives.robust import robust_loss

OBJECTIVES = ["dpo", "ipo", "simpo", "cpo"]
MODES = ["none", "ls", "rdpo", "holder", "ropo", "re"]


def random_logps(batch=5, seed=0, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    policy = -torch.rand(2, batch, generator=g, dtype=dtype) * 40 - 1
    reference = -torch.rand(2, batch, generator=g, dtype=dtype) * 40 - 1
    tokens = torch.randint(1, 30, (2, batch), generator=g).to(dtype)
    chosen, rejected = (t.clone().requires_grad_(requires_grad) for t in policy)
    return SequenceLogProbs(chosen, rejected, tokens[0], tokens[1], reference[0], reference[1])


def test_re_dpo_is_posterior_weighted_mix_of_observed_and_reversed():
    logps = random_logps()
    eta = torch.tensor([0.9, 0.6, 0.55, 0.99, 0.3], dtype=torch.float64)
    cfg = ObjectiveConfig(name="dpo", beta=0.3)
    out = preference_loss(logps, cfg, RobustConfig(mode="re"), eta)
    terms = base_terms(logps, cfg)
    expected = out.w * terms.loss_observed + (1 - out.w) * terms.loss_reversed
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_re_with_constant_w_is_label_smoothing(name):
    logps = random_logps(seed=1)
    cfg = ObjectiveConfig(name=name, beta=0.2)
    terms = base_terms(logps, cfg)
    eps = 0.15
    re = robust_loss(terms, RobustConfig(mode="re", re_form="weighted"), torch.full_like(terms.delta, 1 - eps))
    ls = robust_loss(terms, RobustConfig(mode="ls", epsilon=eps))
    torch.testing.assert_close(re, ls, rtol=1e-12, atol=1e-12)
    if name == "dpo":    # the induced form coincides with the weighted one for DPO
        induced = robust_loss(terms, RobustConfig(mode="re"), torch.full_like(terms.delta, 1 - eps))
        torch.testing.assert_close(induced, ls, rtol=1e-12, atol=1e-12)


def test_w_carries_no_gradient():
    logps = random_logps(requires_grad=True)
    eta = torch.full((5,), 0.7, dtype=torch.float64, requires_grad=True)
    out = preference_loss(logps, ObjectiveConfig(name="dpo"), RobustConfig(mode="re"), eta)
    assert not out.w.requires_grad
    out.loss.sum().backward()
    assert eta.grad is None          # the loss does not depend on eta through any differentiable path
    # d loss / d Delta = -w + sigma(Delta) exactly (w held fixed), for DPO d Delta / d lw = beta.
    expected = 0.1 * (torch.sigmoid(out.delta.detach()) - out.w)
    torch.testing.assert_close(logps.policy_chosen.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode,form", [(mode, "induced") for mode in MODES] + [("re", "weighted")])
@pytest.mark.parametrize("name", OBJECTIVES)
def test_gradcheck(name, mode, form):
    base = random_logps(batch=3, seed=2)
    cfg = ObjectiveConfig(name=name, beta=0.1)
    robust = RobustConfig(mode=mode, epsilon=0.2, re_form=form)
    eta = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    # EM holds w fixed at the current parameters: take it from the unperturbed inputs.
    w = preference_loss(base, cfg, robust, eta).w

    def loss(lw, ll, rw, rl):
        logps = SequenceLogProbs(lw, ll, base.chosen_tokens, base.rejected_tokens, rw, rl)
        return robust_loss(base_terms(logps, cfg), robust, w)

    inputs = tuple(t.clone().requires_grad_(True) for t in (base.policy_chosen, base.policy_rejected,
                                                            base.reference_chosen, base.reference_rejected))
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-7)


finite = dict(allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(OBJECTIVES), mode=st.sampled_from(MODES),
       margin=st.floats(-1e4, 1e4, **finite), eta=st.floats(0.0, 1.0, **finite),
       rejected=st.floats(-5e3, -1e-3, **finite), ref_shift=st.floats(-50, 50, **finite),
       chosen_tokens=st.integers(1, 4096), rejected_tokens=st.integers(1, 4096),
       beta=st.sampled_from([0.01, 0.1, 2.5, 10.0]))
def test_extremes_give_finite_loss_gradients_and_w_in_unit_interval(
        name, mode, margin, eta, rejected, ref_shift, chosen_tokens, rejected_tokens, beta):
    lw = torch.tensor([rejected + margin / beta], dtype=torch.float32, requires_grad=True)
    ll = torch.tensor([rejected], dtype=torch.float32, requires_grad=True)
    logps = SequenceLogProbs(lw, ll, torch.tensor([chosen_tokens]), torch.tensor([rejected_tokens]),
                             torch.tensor([rejected + ref_shift]), torch.tensor([rejected - ref_shift]))
    out = preference_loss(logps, ObjectiveConfig(name=name, beta=beta), RobustConfig(mode=mode),
                          torch.tensor([eta]))
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all()
    assert torch.isfinite(lw.grad).all() and torch.isfinite(ll.grad).all()
    if mode == "re":
        assert 0.0 <= out.w.item() <= 1.0
