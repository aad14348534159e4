"""torchrun with preemption semantics: the same arguments, the workers' exit code as its own.

    python -m recipes.torchrun --nproc-per-node=2 -m recipes.train recipe=tiny_cpu ...

Plain `torchrun` (torch 2.13's elastic agent) turns a preemption into exit 1: on SIGTERM it raises
SignalException, SIGTERMs the workers, SIGKILLs them after --shutdown-timeout (30 s) and exits 1
with a traceback even when every worker saved its checkpoint and exited 75; SIGUSR1 is not in its
default --signals-to-handle (its default action ends the agent; the workers, each in its own
session, never see it); and a worker's exit code (75, or 2 for a config error) becomes
ChildFailedError and exit 1. This wrapper runs the same agent in process but
takes SIGTERM and SIGUSR1 away from it: they are forwarded to every worker's process group and the
agent keeps waiting, with no grace-period SIGKILL, while the workers checkpoint and exit. When the
workers that exited by themselves agree on one exit code, that is the exit code (75: stopped with
a complete checkpoint, start the same command again to resume); otherwise torchrun's report and 1.
SIGINT / SIGHUP / SIGQUIT keep torchrun's behaviour (terminate the workers).
"""

import os
import signal
import sys

from nemo_repo.training.signals import STOP_SIGNALS

FORWARDED = {sig.name for sig in STOP_SIGNALS}


def _worker_groups() -> list[int]:
    """Process groups of this process's children: the agent starts each worker in its own session."""
    import psutil

    groups = []
    for child in psutil.Process().children():
        try:
            groups.append(os.getpgid(child.pid))
        except ProcessLookupError:
            continue
    return groups


def _forward(signum, frame) -> None:
    print(f"[recipes.torchrun] {signal.Signals(signum).name}: forwarded to the workers, waiting for "
          "them to checkpoint and exit", file=sys.stderr, flush=True)
    for group in _worker_groups():
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            pass


def workers_exit_code(exit_codes) -> int | None:
    """The exit code the workers agree on, ignoring those killed by a signal (negative: the
    agent's teardown of the others once one has exited); None when they disagree."""
    own = {code for code in exit_codes if code >= 0}
    return own.pop() if len(own) == 1 else None


def main(argv=None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(argv)
    args.signals_to_handle = ",".join(name for name in args.signals_to_handle.split(",")
                                      if name.strip() not in FORWARDED)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _forward)
    try:
        run(args)
    except ChildFailedError as error:
        code = workers_exit_code(failure.exitcode for failure in error.failures.values())
        if code is None:
            raise   # torchrun's failure table, exit 1
        print(f"[recipes.torchrun] workers exited {code}", file=sys.stderr, flush=True)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
