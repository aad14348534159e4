"""Per-annotator reliability eta_k: the RE-PO M-step state (Eq. 6 and 7).

eta is held fixed while a global batch is processed: micro-batches only `accumulate` their
posteriors w; `step` (once per optimizer step) reduces the sums over the data-parallel group and
moves eta. The sums are fixed-point integers, so the reduction is exact and independent of how
the batch was split across micro-batches and ranks: every rank ends with the same eta, bit for bit,
as one process that saw the whole batch.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

# w in [0, 1] is summed as round(w * 2**40) in int64: exact for up to 2**23 labels per annotator
# per step, with a resolution (~1e-12) far below anything eta can resolve.
_FIXED_POINT_SCALE = 2.0 ** 40
UPDATES = ("ema", "epoch")


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
    update: str = "ema"          # ema: every optimizer step (Eq. 7) | epoch: exact M-step per epoch (Eq. 6)
    prior_strength: float = 0.0  # Beta prior pseudo-counts toward eta0 (0 = off; beyond the paper)
    clamp: float = 1e-4          # eta is kept in [clamp, 1 - clamp]

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


class ReliabilityState:
    """eta per annotator (float64 [K]) with its E/M bookkeeping and checkpoint form.

    Sized from `index` at construction (K = len(index), every eta = eta0), whatever the robust
    mode: the data layer's index is complete before the state is built. A checkpoint is restored
    by annotator id into these positions (`load_state_dict`), never by position."""

    def __init__(self, config: ReliabilityConfig, index: AnnotatorIndex):
        self.config = config
        self.index = index
        self.eta = torch.full((len(index),), config.eta0, dtype=torch.float64)
        self._step_sums = torch.zeros(2, len(index), dtype=torch.int64)    # rows: fixed-point sum of w, count
        self._epoch_sums = torch.zeros(2, len(index), dtype=torch.int64)
        self.labels_seen = torch.zeros(2, len(index), dtype=torch.int64)   # whole run: sum w, count

    def eta_for(self, annotator_index: Tensor) -> Tensor:
        """eta of each pair's annotator, float32 [B], for the E-step."""
        return self.eta[annotator_index.cpu()].float()

    def labelled_eta(self) -> Tensor:
        """eta of the annotators that have labelled training pairs so far (for summaries: an
        annotator known only from validation data keeps eta0 and would bias them)."""
        return self.eta[self.labels_seen[1] > 0]

    def accumulate(self, annotator_index: Tensor, w: Tensor) -> None:
        """Add one micro-batch's posteriors to this step's sums (local; eta does not change)."""
        w = w.detach().cpu().to(torch.float64)
        if not torch.all((w >= 0) & (w <= 1)):
            raise ValueError("posterior weights w must lie in [0, 1]")
        index = annotator_index.cpu().long()
        self._step_sums[0].index_add_(0, index, torch.round(w * _FIXED_POINT_SCALE).long())
        self._step_sums[1].index_add_(0, index, torch.ones_like(index))

    def _map_target(self, sums: Tensor) -> tuple[Tensor, Tensor]:
        """(mean w with the optional Beta prior toward eta0, mask of annotators with labels)."""
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
        sums = self._step_sums.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums, group=group)
        self._step_sums.zero_()
        self._epoch_sums += sums
        self.labels_seen += sums
        if self.config.update == "ema":
            target, labelled = self._map_target(sums)
            alpha = self.config.alpha
            self.eta = torch.where(labelled, (1.0 - alpha) * self.eta + alpha * target, self.eta)
            self._clamp()

    def end_epoch(self) -> None:
        """End of an epoch: for update == "epoch", the exact M-step eta_k = sum w / N_k (Eq. 6),
        with the Beta prior's pseudo-counts when prior_strength > 0. The sums were already
        reduced over data-parallel ranks by `step`."""
        if self.config.update == "epoch":
            target, labelled = self._map_target(self._epoch_sums)
            self.eta = torch.where(labelled, target, self.eta)
            self._clamp()
        self._epoch_sums.zero_()

    def state_dict(self) -> dict:
        return {"index": self.index.state_dict(), "eta": self.eta.clone(),
                "epoch_sums": self._epoch_sums.clone(), "labels_seen": self.labels_seen.clone()}

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
        positions = torch.tensor([self.index.index(i) for i in saved_ids], dtype=torch.long)
        self.eta[positions] = state["eta"].to(torch.float64)
        self._epoch_sums[:, positions] = state["epoch_sums"]
        self.labels_seen[:, positions] = state["labels_seen"]
