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
        _start_checkpoint_writer_shielded(signals)

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def agreed(self, group=None) -> bool:
        flag = torch.tensor([1 if self.received else 0], dtype=torch.int32)
        return bool(all_reduce(flag, op=dist.ReduceOp.MAX, group=group).item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _start_checkpoint_writer_shielded(signals) -> None:
    """Slurm delivers SIGTERM (time limit, scancel) and srun-forwarded SIGUSR1 to every process of
    the job step, including the multiprocessing Manager that dist_checkpointing spawns on its first
    save; with the default action it dies and the save after the signal fails (BrokenPipeError).
    Start it now with the stop signals blocked: the spawned process inherits the mask and never
    receives them; this process gets any that arrived meanwhile once they are unblocked."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        filesystem_async._get_write_results_queue()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


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
