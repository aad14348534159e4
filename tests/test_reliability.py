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
    assert state.labelled_eta().tolist() == state.eta[:2].tolist()   # c has no labels yet


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


def test_state_is_sized_from_the_index_in_every_mode():
    state = ReliabilityState(ReliabilityConfig(eta0=0.8), AnnotatorIndex(["a", "b", "c"]))
    assert state.eta.tolist() == [0.8, 0.8, 0.8] and state.labelled_eta().numel() == 0
    assert state.eta_for(torch.tensor([2, 0])).tolist() == pytest.approx([0.8, 0.8])


def test_state_is_restored_by_annotator_id_not_by_position():
    state = ReliabilityState(ReliabilityConfig(alpha=0.5), AnnotatorIndex(["a", "b"]))
    state.accumulate(torch.tensor([0, 1]), torch.tensor([0.2, 0.6]))
    state.step()
    saved = state.state_dict()

    # the resumed data lists annotators in another order, drops b and adds c
    index = AnnotatorIndex(["c", "a"])
    restored = ReliabilityState(ReliabilityConfig(alpha=0.5), index)
    restored.load_state_dict(saved)
    assert index.ids() == ["c", "a", "b"]                   # positions of c and a unchanged
    eta = dict(zip(index.ids(), restored.eta.tolist()))
    assert eta == {"c": 0.9, "a": state.eta[0].item(), "b": state.eta[1].item()}
    assert restored.labels_seen[:, 1].tolist() == state.labels_seen[:, 0].tolist()
    assert restored.labels_seen[:, 0].tolist() == [0, 0]
    assert restored.state_dict()["index"]["ids"] == ["c", "a", "b"]   # b survives the next save


def calibrated_population(eta_true, copies=400):
    """A calibrated model and one annotator of reliability eta_true, as a finite population: pair j's
    true preference is "A wins" with probability r_j, and the annotator reports the true winner
    w.p. eta_true. p* (the model's probability that the OBSERVED label is the true preference) is
    r_j when it says A, 1 - r_j when it says B. Returns Delta = logit(p*) per labelled pair, each
    support point repeated in proportion to its probability."""
    r = torch.linspace(0.6, 0.99, 40, dtype=torch.float64)
    says_a = r * eta_true + (1 - r) * (1 - eta_true)
    p_star = torch.cat([r, 1 - r])
    counts = torch.round(torch.cat([says_a, 1 - says_a]) * copies).long()
    return torch.logit(p_star).repeat_interleave(counts)


def em_iterations(eta_true, eta_start, iterations):
    """Theorem 4.1's population operator T(eta) = E[w] run with the project's code: the E-step
    `posterior_weight` and ReliabilityState's exact M-step (update=epoch, one epoch per iteration)."""
    delta = calibrated_population(eta_true)
    annotator = torch.zeros(len(delta), dtype=torch.long)
    state = ReliabilityState(ReliabilityConfig(eta0=eta_start, update="epoch", clamp=0.0),
                             AnnotatorIndex(["k"]))
    for _ in range(iterations):
        state.accumulate(annotator, posterior_weight(delta, state.eta_for(annotator).double()))
        state.step()
        state.end_epoch()
    return state.eta.item()


@pytest.mark.parametrize("eta_true", [0.95, 0.7, 0.3, 0.1])     # 0.3, 0.1: adversarial annotators
@pytest.mark.parametrize("eta_start", [0.05, 0.4, 0.6, 0.99])
def test_theorem_4_1_em_converges_to_the_true_reliability_from_either_side_of_one_half(eta_true,
                                                                                     eta_start):
    assert em_iterations(eta_true, eta_start, 300) == pytest.approx(eta_true, abs=2e-3)


def test_ema_on_sampled_batches_reaches_the_same_fixed_point():
    """The EMA of mini-batch means fluctuates around T's fixed point with variance ~ alpha / batch,
    so it is checked on the average of its tail, to a tolerance of a few standard errors."""
    eta_true = 0.7
    population = calibrated_population(eta_true)
    g = torch.Generator().manual_seed(0)
    state = ReliabilityState(ReliabilityConfig(eta0=0.3, alpha=0.1), AnnotatorIndex(["k"]))
    tail = []
    for step in range(3000):
        delta = population[torch.randint(len(population), (256,), generator=g)]
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
