"""Reliability state: EMA / epoch M-steps, prior, clamping, the index, checkpoint form, Theorem 4.1
and bit-exact data-parallel reduction."""

import json
from pathlib import Path

import pytest
import torch

from nemo_repo.objectives import posterior_weight
from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState
from tests import reliability_worker
from tests.dist import run_workers

WORKER = Path(reliability_worker.__file__)


def test_ema_moves_only_labelled_annotators_and_holds_eta_during_the_batch():
    state = ReliabilityState(ReliabilityConfig(eta0=0.9, alpha=0.1), AnnotatorIndex(["a", "b", "c"]))
    state.accumulate(torch.tensor([0, 0]), torch.tensor([1.0, 0.5]))
    assert state.eta.tolist() == [0.9, 0.9, 0.9]            # accumulate never moves eta
    state.accumulate(torch.tensor([1]), torch.tensor([0.25]))
    state.step()
    assert state.eta.tolist() == pytest.approx([0.9 * 0.9 + 0.1 * 0.75, 0.9 * 0.9 + 0.1 * 0.25, 0.9],
                                               abs=1e-12)
    state.step()                                             # an empty step changes nothing
    assert state.eta.tolist() == pytest.approx([0.885, 0.835, 0.9], abs=1e-12)
    assert state.labels_seen[1].tolist() == [2, 1, 0]
    assert state.mean_w()[:2].tolist() == pytest.approx([0.75, 0.25])


def test_epoch_update_is_exact_m_step_with_optional_prior():
    index = AnnotatorIndex(["a", "b"])
    exact = ReliabilityState(ReliabilityConfig(update="epoch"), index)
    for _ in range(3):                                      # three optimizer steps in one epoch
        exact.accumulate(torch.tensor([0, 0, 1]), torch.tensor([1.0, 0.0, 0.5]))
        exact.step()
        assert exact.eta.tolist() == [0.9, 0.9]             # epoch mode waits for the epoch's end
    exact.end_epoch()
    assert exact.eta.tolist() == pytest.approx([0.5, 0.5], abs=1e-12)

    with_prior = ReliabilityState(ReliabilityConfig(update="epoch", eta0=0.9, prior_strength=4.0),
                                  AnnotatorIndex(["a"]))
    with_prior.accumulate(torch.tensor([0, 0]), torch.tensor([0.0, 0.0]))
    with_prior.step()
    with_prior.end_epoch()
    # MAP with Beta(a, b), a - 1 = 4 * 0.9, b - 1 = 4 * 0.1: (0 + 3.6) / (2 + 4)
    assert with_prior.eta.item() == pytest.approx(3.6 / 6.0, abs=1e-12)


def test_clamping_keeps_eta_away_from_zero_and_one():
    state = ReliabilityState(ReliabilityConfig(alpha=1.0, clamp=1e-3), AnnotatorIndex(["a", "b"]))
    state.accumulate(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]))
    state.step()
    assert state.eta.tolist() == pytest.approx([1e-3, 1 - 1e-3])
    w = posterior_weight(torch.tensor([50.0, -50.0]), state.eta_for(torch.tensor([0, 1])))
    assert torch.isfinite(w).all()


def test_bad_weights_and_config_are_rejected():
    state = ReliabilityState(ReliabilityConfig(), AnnotatorIndex())
    with pytest.raises(ValueError, match="w must lie"):
        state.accumulate(torch.tensor([0]), torch.tensor([1.5]))
    for field, value in [("eta0", 1.0), ("alpha", 0.0), ("update", "sgd"), ("prior_strength", -1),
                         ("clamp", 0.5)]:
        with pytest.raises(ValueError, match=field):
            ReliabilityConfig(**{field: value})


def test_index_is_append_only_with_a_virtual_annotator():
    index = AnnotatorIndex(["ann-7", 3])
    assert index.index("ann-7") == 0 and index.index(3) == 1 and index.index("3") == 1
    assert index.index(None) == 2 and index.ids()[2] == AnnotatorIndex.VIRTUAL_ID
    assert len(index) == 3


def test_state_round_trips_and_accepts_unseen_ids_later():
    state = ReliabilityState(ReliabilityConfig(alpha=0.5), AnnotatorIndex(["a", "b"]))
    state.accumulate(torch.tensor([0, 1]), torch.tensor([0.2, 0.6]))
    state.step()
    saved = state.state_dict()

    restored = ReliabilityState(ReliabilityConfig(alpha=0.5), AnnotatorIndex(["c", "a"]))
    restored.load_state_dict(saved)
    assert restored.index.ids() == ["a", "b", "c"]          # saved order first, new ids appended
    assert torch.equal(restored.eta[:2], state.eta)
    assert restored.eta[2].item() == 0.9
    restored.index.index("d")                               # a new annotator appears in new data
    assert restored.eta_for(torch.tensor([3])).item() == pytest.approx(0.9)
    assert torch.equal(restored.labels_seen[:, :2], state.labels_seen)


def population_operator(eta, p_star, prob):
    """T(eta) = E[w] where the expectation runs over the calibrated p* with weights `prob`."""
    return (prob * p_star * eta / (p_star * eta + (1 - p_star) * (1 - eta))).sum()


def calibrated_population(eta_true):
    """A calibrated model: pair j's true preference is "A wins" with probability r_j, and the
    annotator reports the true winner w.p. eta_true. p* for the observed label is r_j when it says
    A, 1 - r_j when it says B. Returns the support of p* and its probabilities."""
    r = torch.linspace(0.55, 0.99, 45, dtype=torch.float64)
    says_a = r * eta_true + (1 - r) * (1 - eta_true)
    return torch.cat([r, 1 - r]), torch.cat([says_a, 1 - says_a]) / len(r)


@pytest.mark.parametrize("eta_true", [0.95, 0.7, 0.55])
@pytest.mark.parametrize("eta_start", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_theorem_4_1_population_operator_converges_to_true_reliability(eta_true, eta_start):
    p_star, prob = calibrated_population(eta_true)
    eta = torch.tensor(eta_start, dtype=torch.float64)
    for _ in range(100000):
        new = population_operator(eta, p_star, prob)
        if abs(new - eta) < 1e-14:
            break
        eta = new
    assert abs(eta.item() - eta_true) < 1e-6


def test_ema_on_sampled_batches_reaches_the_same_fixed_point():
    """The EMA of mini-batch means fluctuates around T's fixed point with variance ~ alpha / batch,
    so it is checked on the average of its tail, to a tolerance of a few standard errors."""
    eta_true = 0.7
    p_star, prob = calibrated_population(eta_true)
    g = torch.Generator().manual_seed(0)
    state = ReliabilityState(ReliabilityConfig(eta0=0.3, alpha=0.1), AnnotatorIndex(["k"]))
    tail = []
    for step in range(3000):
        rows = torch.multinomial(prob, 256, replacement=True, generator=g)
        delta = torch.logit(p_star[rows])
        w = posterior_weight(delta, state.eta_for(torch.zeros(256, dtype=torch.long)).double())
        state.accumulate(torch.zeros(256, dtype=torch.long), w)
        state.step()
        if step >= 1000:
            tail.append(state.eta.item())
    assert abs(sum(tail) / len(tail) - eta_true) < 0.01


def test_two_ranks_with_half_batches_equal_one_process_bit_for_bit(tmp_path):
    run_workers(WORKER, 2, [tmp_path], timeout=120)
    whole = ReliabilityState(reliability_worker.CONFIG, AnnotatorIndex(reliability_worker.IDS))
    for index, w in reliability_worker.batches():
        whole.accumulate(index, w)
        whole.step()
    single = reliability_worker.snapshot(whole)
    for rank in (0, 1):
        distributed = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert distributed == single          # float.hex strings: bit for bit
