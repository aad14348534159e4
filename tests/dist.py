"""Launch a worker script under torchrun (gloo on CPU) from a test, always with a timeout.

Workers write their results to files under a directory the test passes them; the test compares
them. A worker that fails or hangs fails the test with the worker's output attached.
"""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def clean_env(**extra) -> dict:
    """os.environ without launcher coordinates: a test process that initialised a world of one
    in-process (MASTER_PORT of a store it still holds) must not hand them to a child run."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("SLURM_")}
    return {**env, **extra}


def run_workers(script, nproc, args=(), timeout=180, env=None):
    """Run `script` (a path) with `nproc` ranks under torchrun; return the completed process."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        str(script), *map(str, args),
    ]
    full_env = clean_env(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), **(env or {}))
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=full_env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{script} with {nproc} ranks timed out after {timeout}s\n"
                             f"{error.stdout}\n{error.stderr}") from None
    if done.returncode != 0:
        raise AssertionError(f"{script} with {nproc} ranks exited {done.returncode}\n"
                             f"--- stdout ---\n{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-6000:]}")
    return done


def run_in_own_group(command, env, timeout, cwd=REPO_ROOT, until=None, also_kill=lambda: (),
                     merge_stderr=True):
    """Run `command` in a new process group, stdout and stderr in one stream (`merge_stderr`) or
    two. `until(process)` runs meanwhile (e.g. to signal it) and may return more process-group ids;
    afterwards that group, those and `also_kill()`'s are SIGKILLed, so nothing it started survives
    (as a real crash would leave them). Returns the completed process, its returncode None when it
    ran past `timeout`."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT if merge_stderr else err,
                                   start_new_session=True)
        groups = []
        try:
            if until:
                groups = list(until(process) or ())
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            for pgid in [process.pid, *groups, *also_kill()]:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, returncode, out.read(),
                                           None if merge_stderr else err.read())
