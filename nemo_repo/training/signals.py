"""Graceful preemption: SIGTERM / SIGUSR1 ask the loop to checkpoint and exit with code 75.

The handler only records the request; the loop finishes the current optimizer step, agrees with
every rank that a stop was requested (a signal may reach ranks at different moments), saves a
checkpoint and exits with EX_TEMPFAIL (75), which the Slurm launcher treats as "requeue me".
"""

import signal

import torch
import torch.distributed as dist

from nemo_repo.device import all_reduce

EXIT_REQUEUE = 75  # os.EX_TEMPFAIL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Installs handlers for STOP_SIGNALS; `agreed()` is a collective that is True on every rank
    as soon as any rank has received one of them."""

    def __init__(self, signals=STOP_SIGNALS):
        self.received = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def agreed(self, group=None) -> bool:
        flag = torch.tensor([1 if self.received else 0], dtype=torch.int32)
        return bool(all_reduce(flag, op=dist.ReduceOp.MAX, group=group).item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class FaultInjection:
    """Test hook (`debug.signal_at_step`, `debug.signal`): global rank 0 sends itself `signal`
    right after step `step` (after that step's checkpoint, if any). SIGKILL simulates a crash,
    SIGTERM / SIGUSR1 a preemption notice."""

    def __init__(self, step: int | None = None, signal_name: str = "SIGTERM"):
        self.step = step
        self.signal = signal.Signals[signal_name]

    def maybe_fire(self, step: int) -> None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        if self.step is not None and step == self.step and rank == 0:
            signal.raise_signal(self.signal)
