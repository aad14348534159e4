"""Per-annotator reliability eta_k: the RE-PO M-step state (Eq. 6 and 7).

eta is held fixed while a global batch is processed: micro-batches only `accumulate` their
posteriors w; `step` (once per optimizer step) reduces the sums over the data-parallel group and
moves eta. The sums are fixed-point integers, so the reduction is exact and independent of how
the batch was split across micro-batches and ranks: every rank ends with the same eta, bit for bit,
as one process that saw the whole batch.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_repo.device import all_reduce

# w in [0, 1] is summed as round(w * 2**40) in int64: exact for up to 2**23 labels per annotator
# per step, with a resolution (~1e-12) far below anything eta can resolve.
_FIXED_POINT_SCALE = 2.0 ** 40
UPDATES = ("ema", "epoch", "average")
ESTIMATE_FROM = ("all", "holdout")
_HOLDOUT_BUCKETS = 1 << 20


class AnnotatorIndex:
    """Annotator id strings -> dense indices 0..K-1. Append-only: a position, once given, never
    changes, so positions cached by the data layer stay valid when a checkpoint is restored."""

    VIRTUAL_ID = "__all__"

    def __init__(self, ids: Iterable[str] = ()):
        self._ids: list[str] = []
        self._positions: dict[str, int] = {}
        for annotator_id in ids:
            self.index(annotator_id)

    def index(self, annotator_id: str | int | None) -> int:
        key = self.VIRTUAL_ID if annotator_id is None else str(annotator_id)
        if key not in self._positions:
            self._positions[key] = len(self._ids)
            self._ids.append(key)
        return self._positions[key]

    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def state_dict(self) -> dict:
        return {"ids": self.ids()}


@dataclass(frozen=True)
class ReliabilityConfig:
    eta0: float = 0.9            # initial reliability of every annotator
    alpha: float = 0.1           # EMA rate of the mini-batch M-step (Eq. 7)
    update: str = "ema"          # ema: every step (Eq. 7) | epoch: exact M-step per epoch (Eq. 6) | average
    prior_strength: float = 0.0  # Beta prior pseudo-counts toward eta0 (0 = off; beyond the paper)
    clamp: float = 1e-4          # eta is kept in [clamp, 1 - clamp]
    # Which pairs' posteriors feed the M-step (the loss always uses every trained pair's w):
    # all: every pair of the step (the paper) | holdout: only a fixed `holdout_fraction` of the
    # training pairs, chosen by pair index, that the policy never trains on (their loss is
    # dropped), so their Delta is an out-of-sample score at every epoch: the guard against the
    # collapse of every eta toward 1 once the policy has fitted the flipped labels.
    estimate_from: str = "all"
    holdout_fraction: float = 0.1
    # calibrate: the E-step scores with sigma(s * Delta), s fitted after every step by maximum
    # likelihood of the observed labels, eta * sigma(s Delta) + (1 - eta) * sigma(-s Delta), over
    # the last `calibration_window` steps' scored pairs.
    # sigma(Delta) is the model's preference probability, not a calibrated one: an under-confident
    # |Delta| biases every eta toward 0 or 1 and locks the most reliable annotator at 1.
    calibrate: bool = False
    calibration_window: int = 20
    scale_bounds: tuple[float, float] = (0.1, 50.0)
    # final_refit: the reported eta (reliability.json, pair_weights.jsonl) comes from EM iterated
    # to convergence on the training pairs' final Deltas (train.final_pass: each pair's Delta at
    # its last training visit, or a full pass of the trained model; of every pair, or of the
    # held-out pairs only; calibrated when calibrate=true): the exact M-step of one fixed set of
    # scores, free of the running update's lag behind a model that kept improving.
    final_refit: bool = False

    def __post_init__(self):
        if not 0.0 < self.eta0 < 1.0:
            raise ValueError(f"reliability.eta0 must be in (0, 1), got {self.eta0}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"reliability.alpha must be in (0, 1], got {self.alpha}")
        if self.update not in UPDATES:
            raise ValueError(f"reliability.update must be one of {UPDATES}, got {self.update!r}")
        if self.prior_strength < 0:
            raise ValueError(f"reliability.prior_strength must be >= 0, got {self.prior_strength}")
        if not 0.0 <= self.clamp < 0.5:
            raise ValueError(f"reliability.clamp must be in [0, 0.5), got {self.clamp}")
        if self.estimate_from not in ESTIMATE_FROM:
            raise ValueError(f"reliability.estimate_from must be one of {ESTIMATE_FROM}, "
                             f"got {self.estimate_from!r}")
        object.__setattr__(self, "scale_bounds", tuple(float(b) for b in self.scale_bounds))
        if self.calibration_window < 1 or len(self.scale_bounds) != 2 \
                or not 0.0 < self.scale_bounds[0] <= 1.0 <= self.scale_bounds[1]:
            raise ValueError(f"reliability.calibration_window must be >= 1 and scale_bounds (lo, hi) "
                             f"with 0 < lo <= 1 <= hi, got {self.calibration_window}, {self.scale_bounds}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"reliability.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


class ReliabilityState:
    """eta per annotator (float64 [K]) with its E/M bookkeeping and checkpoint form.

    Sized from `index` at construction (K = len(index), every eta = eta0), whatever the robust
    mode: the data layer's index is complete before the state is built. A checkpoint is restored
    by annotator id into these positions (`load_state_dict`), never by position.

    M-step variants (`config.update`):
      ema      eta_k <- (1 - alpha) eta_k + alpha * mean w over the step's labels of k (Eq. 7);
               the prior's pseudo-counts (prior_strength) enter every step's mean.
      epoch    eta_k <- sum w / N_k over the epoch, at its end (Eq. 6).
      average  a running form of Eq. 6: after every step eta_k is the mean w of k's labels over
               the previous and the current epoch, with the Beta prior applied once to those
               accumulated counts, (sum w + c * eta0) / (N_k + c): a per-annotator step size
               1 / (N_k + c) that shrinks with k's label count, so sparse annotators converge
               instead of resting on a fixed alpha and their last few labels; posteriors older
               than one epoch (of an earlier, worse model) drop out.
    """

    def __init__(self, config: ReliabilityConfig, index: AnnotatorIndex):
        self.config = config
        self.index = index
        self.eta = torch.full((len(index),), config.eta0, dtype=torch.float64)
        self._step_sums = torch.zeros(2, len(index), dtype=torch.int64)    # rows: fixed-point sum of w, count
        self._epoch_sums = torch.zeros(2, len(index), dtype=torch.int64)
        self.labels_seen = torch.zeros(2, len(index), dtype=torch.int64)   # whole run: sum w, count
        self._previous_epoch_sums = torch.zeros(2, len(index), dtype=torch.int64)   # update=average
        self.scale = 1.0                                   # E-step calibration (calibrate=True)
        self._scored: list[Tensor] = []                    # this step's local [2, n] (delta, annotator)
        self._calibration: list[Tensor] = []               # the window's global (delta, annotator) per step

    def eta_for(self, annotator_index: Tensor) -> Tensor:
        """eta of each pair's annotator, float32 [B], for the E-step."""
        return self.eta[annotator_index.cpu()].float()

    def labelled_eta(self) -> Tensor:
        """eta of the annotators that have labelled training pairs so far (for summaries: an
        annotator known only from validation data keeps eta0 and would bias them)."""
        return self.eta[self.labels_seen[1] > 0]

    def held_out(self, pair_index: Tensor) -> Tensor:
        """bool [B]: training pairs held out of the loss to score the M-step (estimate_from ==
        "holdout"); all False otherwise. A fixed hash of the pair's index in the training split,
        so the same pairs on every rank, epoch and resume."""
        pair_index = pair_index.cpu().long()
        if self.config.estimate_from != "holdout":
            return torch.zeros(pair_index.shape, dtype=torch.bool)
        mixed = (pair_index * 2654435761 + 97) % (1 << 32)      # Knuth multiplicative hash
        bucket = (mixed * _HOLDOUT_BUCKETS) >> 32
        return bucket < round(self.config.holdout_fraction * _HOLDOUT_BUCKETS)

    def accumulate(self, annotator_index: Tensor, w: Tensor, pair_index: Tensor | None = None,
                   delta: Tensor | None = None) -> None:
        """Add one micro-batch's posteriors to this step's sums (local; eta does not change).
        With estimate_from == "holdout", only the held-out pairs (by `pair_index`) count;
        calibrate needs the pairs' `delta`."""
        w = w.detach().cpu().to(torch.float64)
        if not torch.all((w >= 0) & (w <= 1)):
            raise ValueError("posterior weights w must lie in [0, 1]")
        index = annotator_index.cpu().long()
        if self.config.estimate_from == "holdout":
            if pair_index is None:
                raise ValueError("reliability.estimate_from=holdout needs the pairs' pair_index")
            keep = self.held_out(pair_index)
            w, index = w[keep], index[keep]
            delta = None if delta is None else delta[keep]
        if self.config.calibrate:
            if delta is None:
                raise ValueError("reliability.calibrate needs the pairs' delta")
            self._scored.append(torch.stack([delta.detach().cpu().to(torch.float64), index.to(torch.float64)]))
        self._step_sums[0].index_add_(0, index, torch.round(w * _FIXED_POINT_SCALE).long())
        self._step_sums[1].index_add_(0, index, torch.ones_like(index))

    def _map_target(self, sums: Tensor) -> tuple[Tensor, Tensor]:
        """(mean w with the Beta prior toward eta0 applied once to `sums`, mask of annotators
        with labels)."""
        total_w = sums[0].to(torch.float64) / _FIXED_POINT_SCALE
        count = sums[1].to(torch.float64)
        prior = self.config.prior_strength
        target = (total_w + prior * self.config.eta0) / (count + prior).clamp_min(1e-300)
        return target, sums[1] > 0

    def _clamp(self) -> None:
        self.eta.clamp_(self.config.clamp, 1.0 - self.config.clamp)

    def step(self, group=None) -> None:
        """End of an optimizer step: reduce this step's sums over `group` and, for update == "ema",
        move every annotator that had labels: eta_k <- (1 - alpha) eta_k + alpha * mean w (Eq. 7)."""
        sums = all_reduce(self._step_sums.clone(), group=group)   # on the device the backend needs
        self._step_sums.zero_()
        if self.config.calibrate:
            self._fit_scale(group)
        self._epoch_sums += sums
        self.labels_seen += sums
        if self.config.update == "ema":
            target, labelled = self._map_target(sums)
            alpha = self.config.alpha
            self.eta = torch.where(labelled, (1.0 - alpha) * self.eta + alpha * target, self.eta)
            self._clamp()
        elif self.config.update == "average":
            target, labelled = self._map_target(self._previous_epoch_sums + self._epoch_sums)
            self.eta = target.where(labelled, self.eta)
            self._clamp()

    def _fit_scale(self, group) -> None:
        """M-step for the calibration s (given eta): maximise the observed-data log-likelihood
        sum_i log(eta_k(i) sigma(s d_i) + (1 - eta_k(i)) sigma(-s d_i)) over the window's scored
        pairs, gathered from every data-parallel rank so that every rank fits the same s; a
        golden-section search over log s within scale_bounds. (Not an M-step on the E-step's w:
        EM moves s by only a few per cent per round, since w was computed with the old s.)"""
        local = torch.cat(self._scored, dim=1) if self._scored else torch.empty(2, 0, dtype=torch.float64)
        self._scored = []
        if dist.is_available() and dist.is_initialized():
            parts = [None] * dist.get_world_size(group)
            dist.all_gather_object(parts, local, group=group)
            local = torch.cat(parts, dim=1)
        self._calibration = [*self._calibration, local][-self.config.calibration_window:]
        delta, annotator = torch.cat(self._calibration, dim=1)
        if delta.numel():
            self.scale = self._likelihood_scale(delta, annotator.long(), self.eta)

    def _likelihood_scale(self, delta: Tensor, annotator: Tensor, eta: Tensor) -> float:
        """argmax over s in scale_bounds of sum_i log(eta_k sigma(s d_i) + (1 - eta_k) sigma(-s d_i)),
        by golden-section search over log s (the function is smooth and, in practice, unimodal)."""
        logit_eta = torch.logit(eta[annotator])
        log_sigmoid = torch.nn.functional.logsigmoid

        def log_likelihood(log_scale: float) -> float:
            margin = math.exp(log_scale) * delta
            return float(torch.logaddexp(log_sigmoid(logit_eta) + log_sigmoid(margin),
                                         log_sigmoid(-logit_eta) + log_sigmoid(-margin)).sum())

        low, high = (math.log(b) for b in self.config.scale_bounds)
        ratio = (math.sqrt(5.0) - 1.0) / 2.0
        a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
        fa, fb = log_likelihood(a), log_likelihood(b)
        for _ in range(30):               # the bracket shrinks to 0.618^30 ~ 1e-6 of its width
            if fa >= fb:
                high, b, fb = b, a, fa
                a = low + (1 - ratio) * (high - low)
                fa = log_likelihood(a)
            else:
                low, a, fa = a, b, fb
                b = low + ratio * (high - low)
                fb = log_likelihood(b)
        return math.exp((low + high) / 2.0)

    def refit(self, annotator_index: Tensor, delta: Tensor, pair_index: Tensor,
              max_iterations: int = 200, tolerance: float = 1e-6) -> None:
        """EM to convergence on one snapshot's Delta of the training pairs (final_refit): E-step
        w = sigma(s Delta + logit eta), exact M-step with the prior applied once, and s by maximum
        likelihood when calibrate; only the held-out pairs when estimate_from == "holdout".
        Local (call it where the whole pass is gathered); replaces eta and s."""
        index, delta = annotator_index.cpu().long(), delta.detach().cpu().to(torch.float64)
        if self.config.estimate_from == "holdout":
            keep = self.held_out(pair_index)
            index, delta = index[keep], delta[keep]
        count = torch.zeros(len(self.index), dtype=torch.float64).index_add_(
            0, index, torch.ones_like(delta))
        prior = self.config.prior_strength
        for _ in range(max_iterations):
            w = torch.sigmoid(self.scale * delta + torch.logit(self.eta[index]))
            total = torch.zeros_like(count).index_add_(0, index, w)
            target = (total + prior * self.config.eta0) / (count + prior).clamp_min(1e-300)
            eta = torch.where(count > 0, target, self.eta).clamp(self.config.clamp, 1.0 - self.config.clamp)
            change = float((eta - self.eta).abs().max())
            self.eta = eta
            if self.config.calibrate and delta.numel():
                scale = self._likelihood_scale(delta, index, self.eta)
                change, self.scale = max(change, abs(scale - self.scale) / self.scale), scale
            if change < tolerance:
                break

    def end_epoch(self) -> None:
        """End of an epoch: for update == "epoch", the exact M-step eta_k = sum w / N_k (Eq. 6),
        with the Beta prior's pseudo-counts when prior_strength > 0 (update == "average" has
        reached the same value step by step). The sums were already reduced over data-parallel
        ranks by `step`."""
        if self.config.update == "epoch":
            target, labelled = self._map_target(self._epoch_sums)
            self.eta = torch.where(labelled, target, self.eta)
            self._clamp()
        self._previous_epoch_sums = self._epoch_sums.clone()
        self._epoch_sums.zero_()

    def state_dict(self) -> dict:
        return {"index": self.index.state_dict(), "eta": self.eta.clone(),
                "epoch_sums": self._epoch_sums.clone(), "labels_seen": self.labels_seen.clone(),
                "previous_epoch_sums": self._previous_epoch_sums.clone(), "scale": self.scale,
                "calibration": [part.clone() for part in self._calibration]}

    def load_state_dict(self, state: dict) -> None:
        """Restore by annotator id: each saved annotator's eta and sums go to its position in this
        index, whatever order the current data lists annotators in. Annotators only the current
        data knows keep eta0; annotators only the checkpoint knows are appended (so the next
        checkpoint still holds them)."""
        saved_ids = state["index"]["ids"]
        for annotator_id in saved_ids:
            self.index.index(annotator_id)
        size = len(self.index)
        self.eta = torch.full((size,), self.config.eta0, dtype=torch.float64)
        self._step_sums = torch.zeros(2, size, dtype=torch.int64)
        self._epoch_sums = torch.zeros(2, size, dtype=torch.int64)
        self.labels_seen = torch.zeros(2, size, dtype=torch.int64)
        self._previous_epoch_sums = torch.zeros(2, size, dtype=torch.int64)
        positions = torch.tensor([self.index.index(i) for i in saved_ids], dtype=torch.long)
        self.eta[positions] = state["eta"].to(torch.float64)
        self._epoch_sums[:, positions] = state["epoch_sums"]
        self.labels_seen[:, positions] = state["labels_seen"]
        if "previous_epoch_sums" in state:   # absent in checkpoints written before update=average
            self._previous_epoch_sums[:, positions] = state["previous_epoch_sums"]
        self.scale = float(state.get("scale", 1.0))   # and before calibrate
        self._calibration = []
        for part in state.get("calibration", []):   # annotator column: saved position -> this one
            part = part.clone()
            part[1] = positions[part[1].long()].to(part.dtype)
            self._calibration.append(part)
