"""Every base objective x robust mode against values computed by hand from the formulas in
the README's RE-PO section (and nemo_repo/objectives docstrings) with plain `math` (never by calling the code under test)."""

import math

import pytest
import torch

from nemo_repo.objectives import ObjectiveConfig, RobustConfig, SequenceLogProbs, preference_loss

# One pair, chosen/rejected log-prob sums of policy and reference, and token counts.
LW, LL, RW, RL, NW, NL = -12.0, -15.0, -13.0, -14.0, 4.0, 6.0
BETA = 0.5
ETA = 0.8


def logsig(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def hand_terms(name):
    """(L_obs, L_rev, Delta, chosen_reward, rejected_reward) written out per objective."""
    if name == "dpo":
        h = (LW - RW) - (LL - RL)
        return -logsig(BETA * h), -logsig(-BETA * h), BETA * h, BETA * (LW - RW), BETA * (LL - RL)
    if name == "ipo":
        h = (LW - RW) - (LL - RL)
        return ((h - 1 / (2 * BETA)) ** 2, (-h - 1 / (2 * BETA)) ** 2, 2 * h / BETA,
                BETA * (LW - RW), BETA * (LL - RL))
    if name == "simpo":
        gamma = BETA * 0.5
        s = BETA * (LW / NW - LL / NL)
        obs, rev = -logsig(s - gamma), -logsig(-s - gamma)
        return obs, rev, rev - obs, BETA * LW / NW, BETA * LL / NL
    if name == "cpo":
        x = BETA * (LW - LL)
        obs, rev = -logsig(x) + 1.0 * (-LW), -logsig(-x) + 1.0 * (-LL)
        return obs, rev, rev - obs, BETA * LW, BETA * LL
    raise AssertionError(name)


def hand_loss(name, mode):
    obs, rev, delta, _, _ = hand_terms(name)
    eps, g, a = 0.2, 2.0, 14.0
    if mode == "none":
        return obs
    if mode == "ls":
        return (1 - eps) * obs + eps * rev
    if mode == "rdpo":
        return ((1 - eps) * obs - eps * rev) / (1 - 2 * eps)
    if mode == "holder":
        p = sigmoid(delta)
        return -(1 + g) * p ** g + g * p ** (1 + g)
    if mode == "ropo":
        return 4 * a / (1 + a) ** 2 * -logsig(delta) + 4 * a * a / (1 + a) ** 2 * sigmoid(-delta)
    if mode == "re":
        w = delta_w(delta)
        return w * -logsig(delta) + (1 - w) * -logsig(-delta)
    raise AssertionError(mode)


def delta_w(delta):
    p = sigmoid(delta)
    return p * ETA / (p * ETA + (1 - p) * (1 - ETA))


def run(name, mode, **robust):
    logps = SequenceLogProbs(*(torch.tensor([v], dtype=torch.float64) for v in (LW, LL, NW, NL, RW, RL)))
    return preference_loss(logps, ObjectiveConfig(name=name, beta=BETA),
                           RobustConfig(mode=mode, epsilon=0.2, **robust),
                           torch.tensor([ETA], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["none", "ls", "rdpo", "holder", "ropo", "re"])
@pytest.mark.parametrize("name", ["dpo", "ipo", "simpo", "cpo"])
def test_loss_matches_hand_computation(name, mode):
    out = run(name, mode)
    assert out.loss.item() == pytest.approx(hand_loss(name, mode), rel=1e-12, abs=1e-12)
    obs, rev, delta, chosen, rejected = hand_terms(name)
    assert out.delta.item() == pytest.approx(delta, rel=1e-12)
    assert out.chosen_reward.item() == pytest.approx(chosen, rel=1e-12)
    assert out.rejected_reward.item() == pytest.approx(rejected, rel=1e-12)
    assert out.margin.item() == pytest.approx(chosen - rejected, rel=1e-12)
    assert out.reward_accuracy.item() == float(chosen > rejected)
    # the E-step posterior in every mode given eta (it trains only in RE: loss above is hand's)
    assert out.w.item() == pytest.approx(delta_w(delta), rel=1e-12)


def test_ipo_length_normalised_and_cpo_mean_nll():
    logps = SequenceLogProbs(*(torch.tensor([v], dtype=torch.float64) for v in (LW, LL, NW, NL, RW, RL)))
    ipo = preference_loss(logps, ObjectiveConfig(name="ipo", beta=BETA, ipo_length_normalize=True),
                          RobustConfig())
    h = (LW - RW) / NW - (LL - RL) / NL
    assert ipo.loss.item() == pytest.approx((h - 1 / (2 * BETA)) ** 2, rel=1e-12)
    cpo = preference_loss(logps, ObjectiveConfig(name="cpo", beta=BETA, cpo_nll_normalize="mean",
                                                 cpo_lambda=0.5), RobustConfig())
    assert cpo.loss.item() == pytest.approx(-logsig(BETA * (LW - LL)) + 0.5 * (-LW / NW), rel=1e-12)
    assert cpo.delta.item() == pytest.approx(BETA * (LW - LL) + 0.5 * (-LL / NL + LW / NW), rel=1e-12)


def test_simpo_gamma_is_beta_times_ratio():
    logps = SequenceLogProbs(*(torch.tensor([v], dtype=torch.float64) for v in (LW, LL, NW, NL)))
    out = preference_loss(logps, ObjectiveConfig(name="simpo", beta=2.5, simpo_gamma_beta_ratio=0.1),
                          RobustConfig())
    s = 2.5 * (LW / NW - LL / NL)
    assert out.loss.item() == pytest.approx(-logsig(s - 0.25), rel=1e-12)


@pytest.mark.parametrize("field,value", [("name", "kto"), ("beta", 0.0), ("cpo_nll_normalize", "max"),
                                         ("simpo_gamma_beta_ratio", -1.0)])
def test_objective_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        ObjectiveConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("mode", "huber"), ("epsilon", 0.5), ("holder_gamma", 0.0),
                                         ("re_form", "other")])
def test_robust_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        RobustConfig(**{field: value})


def test_reference_objectives_require_reference_sums():
    logps = SequenceLogProbs(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="reference"):
        preference_loss(logps, ObjectiveConfig(name="dpo"), RobustConfig())
    preference_loss(logps, ObjectiveConfig(name="simpo"), RobustConfig())   # needs none


def test_re_requires_eta():
    logps = SequenceLogProbs(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="eta"):
        preference_loss(logps, ObjectiveConfig(name="simpo"), RobustConfig(mode="re"))
