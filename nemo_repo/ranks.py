"""Process ranks for every layer (pure torch.distributed, no megatron): this process's global
rank, a barrier, work done by rank 0 alone whose outcome every rank learns at once, and a free
local port for a rendezvous.

Without `on_rank_zero`, a rank-0-only step that fails (a file that cannot be written) leaves the
other ranks waiting in the next collective, with NCCL until its timeout (10 minutes); with it,
every rank raises together, the others naming rank 0's error. Outside a process group (a world of
one) every helper degrades to the plain single-process behaviour.
"""

import socket

import torch.distributed as dist


class RankZeroError(RuntimeError):
    """Raised on every rank but 0 when work run by rank 0 alone failed there."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a local rendezvous: MASTER_PORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _distributed() else 0


def barrier() -> None:
    if _distributed():
        dist.barrier()


def on_rank_zero(work, *args, **kwargs):
    """Collective: run `work(*args, **kwargs)` on global rank 0 only and broadcast the outcome.
    Returns work's result (pickled to the other ranks) on every rank; no rank returns before rank
    0's work has finished. If work raised, rank 0 re-raises it and every other rank raises
    RankZeroError with rank 0's message."""
    if not _distributed() or dist.get_world_size() == 1:
        return work(*args, **kwargs)
    outcome = [None]
    if dist.get_rank() == 0:
        try:
            outcome = [(True, work(*args, **kwargs))]
        except BaseException as error:
            dist.broadcast_object_list([(False, f"{type(error).__name__}: {error}")], src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    succeeded, value = outcome[0]
    if not succeeded:
        raise RankZeroError(f"rank 0 failed: {value}")
    return value


def first_failure(message: str | None) -> str | None:
    """Collective: every rank passes its failure message (None: it succeeded) and gets the first
    failing rank's, as "rank R: message", or None when every rank succeeded; all ranks then take
    the same branch."""
    if not _distributed() or dist.get_world_size() == 1:
        return message
    messages = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    return next((f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None), None)
