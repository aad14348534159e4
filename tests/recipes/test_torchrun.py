"""recipes/torchrun.py: a preemption signal delivered to torchrun's process group, to the agent
alone or to the workers alone ends a 2-process training with a complete checkpoint, no temporary
directory and exit 75; a config error exits 2. Every run has its own timeout."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from nemo_repo.training import checkpoint
from nemo_repo.training.signals import EXIT_REQUEUE
from recipes.torchrun import workers_exit_code
from nemo_repo.ranks import free_port
from tests.dist import REPO_ROOT, clean_env, run_in_own_group
from tests.training import runs
from tests.training.runs import records

STEPS = 40   # never reached: the signal lands after step 2


def tiny(run_dir, cache_dir, *extra):
    """The tiny run, saving only when stopped."""
    return runs.tiny(run_dir, cache_dir, "train.eval_interval=0", "checkpoint.interval=0",
                     "logging.eta_log_interval=0", *extra, steps=STEPS)


def torchrun(args, until=None, timeout=150) -> subprocess.CompletedProcess:
    """`python -m recipes.torchrun --nproc-per-node=2 recipes/train.py ARGS` in its own process
    group; `until(process)` runs meanwhile. Nothing it started survives it."""
    command = [sys.executable, "-m", "recipes.torchrun", "--nproc-per-node=2", "--nnodes=1",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}",
               str(REPO_ROOT / "recipes" / "train.py"), *map(str, args)]
    done = run_in_own_group(command, clean_env(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT)), timeout,
                            until=until)
    assert done.returncode is not None, f"timed out after {timeout}s\n{done.stdout[-6000:]}"
    return done


def signal_after_step(run_dir, step, target, sig, timeout=120):
    """Once rank 0 has logged `step`, send `sig` to torchrun's process group, to the agent alone or
    to each worker alone; returns the workers' pids (each leads its own process group)."""
    def until(process):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if (run_dir / "metrics.jsonl").exists() and \
                    any(r["split"] == "train" and r["step"] >= step for r in records(run_dir)):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"step {step} never logged in {run_dir}")
        workers = [child.pid for child in psutil.Process(process.pid).children()]
        assert len(workers) == 2
        if target == "group":
            os.killpg(process.pid, sig)
        elif target == "agent":
            process.send_signal(sig)
        else:
            for pid in workers:
                os.kill(pid, sig)
        return workers
    return until


@pytest.mark.distributed
@pytest.mark.parametrize("target, sig", [("group", signal.SIGTERM), ("agent", signal.SIGUSR1),
                                         ("workers", signal.SIGTERM)],
                         ids=["TERM-to-group", "USR1-to-agent", "TERM-to-workers"])
def test_a_stop_signal_ends_with_a_complete_checkpoint_and_exit_75(tmp_path_factory, target, sig):
    root = tmp_path_factory.mktemp(f"{target}-{sig.name}")
    run_dir = root / "run"
    done = torchrun(tiny(run_dir, tmp_path_factory.getbasetemp() / "cache"),
                    until=signal_after_step(run_dir, 2, target, sig))
    assert done.returncode == EXIT_REQUEUE, done.stdout[-6000:]
    assert f"{sig.name}: checkpoint at step" in done.stdout
    assert "Traceback" not in done.stdout, done.stdout[-6000:]
    steps = [s for s, _ in checkpoint.complete_checkpoints(run_dir / "checkpoints")]
    logged = max(r["step"] for r in records(run_dir) if r["split"] == "train")
    assert steps == [logged] and 2 <= logged < STEPS
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [checkpoint.step_dir_name(logged)]
    marker = json.loads((run_dir / "checkpoints" / checkpoint.step_dir_name(logged) / checkpoint.MARKER).read_text())
    assert marker["step"] == logged


@pytest.mark.distributed
def test_the_workers_config_error_is_the_exit_code(tmp_path):
    done = torchrun(tiny(tmp_path / "run", tmp_path / "cache", "objective.beta=-1"), timeout=90)
    assert done.returncode == 2, done.stdout[-6000:]
    assert "config error" in done.stdout and "objective.beta" in done.stdout


@pytest.mark.parametrize("codes, expected", [
    ([75, 75], 75), ([75, -15], 75), ([2, 2], 2), ([1, -15], 1), ([75, 1], None), ([-9, -15], None),
])
def test_the_exit_code_is_the_one_the_workers_agree_on(codes, expected):
    assert workers_exit_code(codes) == expected
