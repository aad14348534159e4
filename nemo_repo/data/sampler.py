"""Deterministic, DP-sharded, resumable order of training pairs.

Epoch e visits the pairs in the permutation drawn from (seed, e). Optimizer step t of the epoch
takes global batch t = positions [t*G, (t+1)*G) of that order; data-parallel rank r takes the
contiguous slice [r*G/dp, (r+1)*G/dp) of it and splits that into micro-batches. The position
(epoch, step in epoch) is the whole state, independent of the parallel layout, so a resumed run
sees exactly the remaining global batches (also after changing the DP size).

The incomplete last global batch (N % G pairs) is either dropped (`drop`: N // G steps per epoch;
which pairs miss the epoch changes every epoch) or filled up with the epoch's first pairs (`wrap`:
ceil(N / G) steps; those pairs are seen twice in that epoch); `epoch_summary()` reports the count.
"""

from typing import NamedTuple

import numpy as np

INCOMPLETE = ("drop", "wrap")


class StepPlan(NamedTuple):
    epoch: int
    step_in_epoch: int
    micro_batches: list[list[int]]    # this rank's pair indices, one list per micro-batch
    last_in_epoch: bool


class PreferenceSampler:
    def __init__(self, num_pairs: int, global_batch_size: int, micro_batch_size: int,
                 dp_rank: int = 0, dp_size: int = 1, seed: int = 0, incomplete: str = "drop"):
        if incomplete not in INCOMPLETE:
            raise ValueError(f"data.incomplete_batch must be one of {INCOMPLETE}, got '{incomplete}'")
        if global_batch_size % (micro_batch_size * dp_size):
            raise ValueError(f"global batch {global_batch_size} is not divisible by micro batch "
                             f"{micro_batch_size} x data-parallel size {dp_size}")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} outside [0, {dp_size})")
        if num_pairs < global_batch_size:
            raise ValueError(f"the training split has {num_pairs} pairs, fewer than one global "
                             f"batch of {global_batch_size}")
        self.num_pairs, self.global_batch_size = num_pairs, global_batch_size
        self.micro_batch_size, self.dp_rank, self.dp_size = micro_batch_size, dp_rank, dp_size
        self.seed, self.incomplete = seed, incomplete
        self.epoch = self.step_in_epoch = 0
        self._order_epoch, self._order = None, None

    @property
    def remainder(self) -> int:
        return self.num_pairs % self.global_batch_size

    @property
    def steps_per_epoch(self) -> int:
        full = self.num_pairs // self.global_batch_size
        return full + (1 if self.incomplete == "wrap" and self.remainder else 0)

    def epoch_summary(self) -> dict:
        extra = self.global_batch_size - self.remainder if self.remainder else 0
        return {"pairs": self.num_pairs, "global_batch_size": self.global_batch_size,
                "steps_per_epoch": self.steps_per_epoch, "incomplete_batch": self.incomplete,
                "dropped_per_epoch": self.remainder if self.incomplete == "drop" else 0,
                "repeated_per_epoch": extra if self.incomplete == "wrap" else 0}

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's visiting order (length steps_per_epoch * G)."""
        if self._order_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)
            if self.incomplete == "wrap" and self.remainder:
                order = np.concatenate([order, order[:self.global_batch_size - self.remainder]])
            self._order_epoch, self._order = epoch, order[:self.steps_per_epoch * self.global_batch_size]
        return self._order

    def global_batch(self, epoch: int, step: int) -> np.ndarray:
        G = self.global_batch_size
        return self.order(epoch)[step * G:(step + 1) * G]

    def rank_share(self, global_batch: np.ndarray) -> list[list[int]]:
        share = self.global_batch_size // self.dp_size
        mine = global_batch[self.dp_rank * share:(self.dp_rank + 1) * share].tolist()
        return [mine[i:i + self.micro_batch_size] for i in range(0, share, self.micro_batch_size)]

    def next_step(self) -> StepPlan:
        epoch, step = self.epoch, self.step_in_epoch
        plan = StepPlan(epoch, step, self.rank_share(self.global_batch(epoch, step)),
                        step + 1 == self.steps_per_epoch)
        self.step_in_epoch += 1
        if self.step_in_epoch == self.steps_per_epoch:
            self.epoch, self.step_in_epoch = epoch + 1, 0
        return plan

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "seed": self.seed,
                "num_pairs": self.num_pairs, "global_batch_size": self.global_batch_size,
                "incomplete": self.incomplete}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "num_pairs", "global_batch_size", "incomplete"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state was saved with {key}={state[key]!r} but this run "
                                 f"has {key}={getattr(self, key)!r}; the data or batch size changed")
        if not 0 <= state["step_in_epoch"] < self.steps_per_epoch:
            raise ValueError(f"sampler state step_in_epoch={state['step_in_epoch']} outside "
                             f"[0, {self.steps_per_epoch})")
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
