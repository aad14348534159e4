"""slurm/*.sbatch run here as Slurm would run them, with stand-ins for srun / scontrol / sbatch
(tests/slurm/stubs/) emulating a 2-node allocation with one task per node: a tiny CPU training
(DP=2, gloo) completes; USR1 delivered to the batch script mid-run checkpoints, requeues, and the
requeued run (SLURM_RESTART_COUNT=1) ends with the same result as an uninterrupted one; other exit
codes and an exhausted restart budget are not requeued. Every run has its own timeout."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from nemo_repo.training import checkpoint
from nemo_repo.training.signals import EXIT_REQUEUE
from recipes import launch
from nemo_repo.ranks import free_port
from tests.dist import REPO_ROOT, clean_env, run_in_own_group
from tests.training.runs import final_state, records

STUBS = Path(__file__).resolve().parent / "stubs"
STEPS = 40   # long enough that USR1 sent after step 3 lands well before the end
_SCRIPT_VARS = {"PYTHON", "GPUS_PER_NODE", "MAX_RESTARTS", "REPO_DIR", "CONTAINER_IMAGE", "CONTAINER_MOUNTS"}


def tiny(cache_dir, *extra):
    """tests/training/test_resume.py's tiny run (run.dir comes from --run-dir), STEPS steps."""
    return [f"++data.cache_dir={cache_dir}", "recipe=tiny_cpu", "data.synthetic.n_train=64",
            "data.synthetic.n_validation=16", "parallel.micro_batch_size=4",
            "parallel.global_batch_size=8", f"train.max_steps={STEPS}", "train.eval_interval=0",
            "checkpoint.interval=2", "checkpoint.keep_last=2", "logging.progress=false",
            "logging.tensorboard=false", "logging.eta_log_interval=10", *extra]


def allocation(root: Path, **extra) -> dict:
    """Environment of batch job 4242 on two nodes (localhost, 127.0.0.1), one task per node."""
    env = {k: v for k, v in clean_env().items() if k not in _SCRIPT_VARS}
    root.mkdir(parents=True, exist_ok=True)
    return {**env, "PATH": f"{STUBS}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(root / "stub.jsonl"),
            "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "localhost,127.0.0.1",
            "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_SUBMIT_DIR": str(root),
            "OMP_NUM_THREADS": "1", **extra}


def stub_log(env) -> list[dict]:
    path = Path(env["STUB_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def requeues(env) -> list[str]:
    return [r["requeue"] for r in stub_log(env) if "requeue" in r]


def submit(run_dir: Path, env: dict, overrides, *options) -> Path:
    """recipes.launch for 2 nodes x 1 GPU, submitted to the sbatch stub; the rendered script."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", env["PATH"])
        patch.setenv("STUB_LOG", env["STUB_LOG"])
        code = launch.main(["--nodes", "2", "--gpus-per-node", "1", "--run-dir", str(run_dir),
                            "--master-port", str(free_port()), "--max-restarts", "1", *options,
                            "--", *overrides])
    assert code == 0
    script = run_dir / "slurm" / "train.sbatch"
    assert {"sbatch": [str(script)]} in stub_log(env)
    return script


def run_batch(script, env, *args, timeout=120, until=None) -> subprocess.CompletedProcess:
    """`bash script args` as the batch shell; `until(process)` runs while it does (e.g. to signal
    it). Afterwards nothing it started survives: its group and every task's group are killed."""
    done = run_in_own_group(["bash", str(script), *args], env, timeout, cwd=env["SLURM_SUBMIT_DIR"],
                            until=until,
                            also_kill=lambda: [r["pid"] for r in stub_log(env) if "pid" in r])
    assert done.returncode is not None, f"batch script timed out after {timeout}s\n{done.stdout[-6000:]}"
    return done


def expect(done, code):
    assert done.returncode == code, f"exit {done.returncode}, expected {code}\n{done.stdout[-6000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run through launch + train.sbatch (2 nodes x 1 task): its env and run dir."""
    root = tmp_path_factory.mktemp("reference")
    env = allocation(root)
    run_dir = root / "run"
    expect(run_batch(submit(run_dir, env, tiny(root / "cache")), env), 0)
    return env, run_dir


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (make setup installs it with apt-get as root)")
def test_shell_scripts_and_a_rendered_script_pass_shellcheck(tmp_path, capsys):
    assert launch.main(["--run-dir", str(tmp_path / "run"), "--container-image", "img", "--dry-run",
                        "--", "recipe=paper/mistral_re_dpo"]) == 0
    out = capsys.readouterr().out
    rendered = tmp_path / "rendered.sbatch"
    rendered.write_text(out[out.index("#!/bin/bash"):])
    scripts = [*sorted((REPO_ROOT / "slurm").glob("*.sh")), *sorted((REPO_ROOT / "slurm").glob("*.sbatch")),
               *(STUBS / name for name in ("scontrol", "sbatch", "fake-trainer")), rendered]
    done = subprocess.run(["shellcheck", "-x", *map(str, scripts)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.distributed
def test_two_nodes_train_to_the_end_with_ranks_and_rendezvous_from_slurm(reference):
    env, run_dir = reference
    log = stub_log(env)
    srun = next(r for r in log if "srun" in r)
    assert {"--nodes=2", "--ntasks-per-node=1", f"--chdir={REPO_ROOT}"} <= set(srun["srun"])
    assert srun["command"][1:3] == ["-m", "recipes.train"] and f"run.dir={run_dir}" in srun["command"]
    tasks = [r for r in log if "task" in r]
    assert [(t["SLURM_PROCID"], t["SLURM_NODEID"], t["SLURM_NTASKS"]) for t in tasks] == \
        [("0", "0", "2"), ("1", "1", "2")]
    exported = f"export MASTER_PORT={tasks[0]['MASTER_PORT']}\n"
    assert exported in (run_dir / "slurm" / "train.sbatch").read_text()
    assert {(t["MASTER_ADDR"], t["MASTER_PORT"]) for t in tasks} == {("localhost", tasks[0]["MASTER_PORT"])}
    assert requeues(env) == []
    assert [r["step"] for r in records(run_dir) if r["split"] == "train"] == list(range(1, STEPS + 1))
    assert checkpoint.latest_checkpoint(run_dir / "checkpoints").name == checkpoint.step_dir_name(STEPS)


def _signal_after_step(run_dir, step, sig=signal.SIGUSR1, timeout=90):
    """Send `sig` to the batch shell once rank 0 has logged `step` (USR1: as Slurm's
    --signal=B:USR1 would; TERM: as scancel or a preemption would)."""
    def until(process):
        deadline = time.monotonic() + timeout
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.exists() and any(r["split"] == "train" and r["step"] >= step for r in records(run_dir)):
                process.send_signal(sig)
                return
            time.sleep(0.05)
        raise AssertionError(f"step {step} never logged in {metrics}")
    return until


@pytest.mark.distributed
def test_usr1_to_the_batch_script_checkpoints_requeues_and_the_requeued_run_matches(reference, tmp_path):
    reference_env, reference_dir = reference
    env = allocation(tmp_path)
    run_dir = tmp_path / "run"
    script = submit(run_dir, env, tiny(reference_dir.parent / "cache"))
    preempted = run_batch(script, env, until=_signal_after_step(run_dir, 3))
    expect(preempted, 0)
    assert "SIGUSR1" in preempted.stdout and {"forwarded": "SIGUSR1"} in stub_log(env)
    stopped_at, _ = checkpoint.complete_checkpoints(run_dir / "checkpoints")[-1]
    assert 3 <= stopped_at < STEPS, preempted.stdout[-3000:]
    assert requeues(env) == ["4242"]
    # Slurm starts the same script again with SLURM_RESTART_COUNT=1; it resumes and finishes
    resumed = run_batch(script, {**env, "SLURM_RESTART_COUNT": "1"})
    expect(resumed, 0)
    assert requeues(env) == ["4242"]
    assert "resumed from" in resumed.stdout and checkpoint.step_dir_name(stopped_at) in resumed.stdout
    assert final_state(run_dir) == final_state(reference_dir)


@pytest.mark.distributed
def test_sigterm_to_the_batch_script_leaves_a_complete_checkpoint_and_requeues(reference, tmp_path):
    _, reference_dir = reference
    env = allocation(tmp_path)
    run_dir = tmp_path / "run"
    script = submit(run_dir, env, tiny(reference_dir.parent / "cache", "checkpoint.interval=0"))
    preempted = run_batch(script, env, until=_signal_after_step(run_dir, 2, signal.SIGTERM))
    expect(preempted, 0)
    assert "SIGTERM: checkpoint at step" in preempted.stdout and {"forwarded": "SIGTERM"} in stub_log(env)
    assert "Traceback" not in preempted.stdout, preempted.stdout[-6000:]
    stopped_at = max(r["step"] for r in records(run_dir) if r["split"] == "train")
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [checkpoint.step_dir_name(stopped_at)]
    assert checkpoint.complete_checkpoints(run_dir / "checkpoints")[-1][0] == stopped_at
    assert requeues(env) == ["4242"]


@pytest.mark.distributed
def test_a_trainer_failure_is_not_requeued_and_its_exit_code_is_the_jobs(reference, tmp_path):
    _, reference_dir = reference
    env = allocation(tmp_path)
    script = submit(tmp_path / "run", env, tiny(reference_dir.parent / "cache"))
    done = run_batch(script, env, "train.max_steps=0", timeout=60)   # invalid config: trainer exits 2
    expect(done, 2)
    assert "config error" in done.stdout and requeues(env) == []


@pytest.mark.parametrize("trainer_exit, restart_count, requeue_fails, job_exit, requeued", [
    (EXIT_REQUEUE, "0", False, 0, True),              # preempted: requeued
    (EXIT_REQUEUE, "1", False, EXIT_REQUEUE, False),  # MAX_RESTARTS=1 reached
    (EXIT_REQUEUE, "0", True, EXIT_REQUEUE, False),   # scontrol requeue refused
    (3, "0", False, 3, False),                        # any other failure
    (0, "0", False, 0, False),                        # done
])
def test_requeue_decision(tmp_path, trainer_exit, restart_count, requeue_fails, job_exit, requeued):
    env = allocation(tmp_path, PYTHON="fake-trainer", FAKE_EXIT=str(trainer_exit),
                     SLURM_RESTART_COUNT=restart_count, **({"STUB_REQUEUE_FAILS": "1"} if requeue_fails else {}))
    script = submit(tmp_path / "run", env, ["recipe=tiny_cpu"])
    expect(run_batch(script, env, timeout=30), job_exit)
    assert requeues(env) == (["4242"] if requeued else [])


def test_convert_runs_on_every_task_in_the_container_and_passes_its_exit_code(tmp_path):
    env = allocation(tmp_path, PYTHON="fake-trainer", FAKE_EXIT="3", GPUS_PER_NODE="2",
                     CONTAINER_IMAGE="nvcr.io#nvidia/pytorch:25.01-py3", CONTAINER_MOUNTS="/data:/data",
                     REPO_DIR=str(REPO_ROOT))
    args = ["export", "--checkpoint", "/data/run/checkpoints", "--out", "/data/hf", "--tp", "4"]
    expect(run_batch(REPO_ROOT / "slurm" / "convert.sbatch", env, *args, timeout=30), 3)
    srun = next(r for r in stub_log(env) if "srun" in r)
    assert {"--nodes=2", "--ntasks-per-node=2", "--container-image=nvcr.io#nvidia/pytorch:25.01-py3",
            f"--container-mounts={REPO_ROOT}:{REPO_ROOT},/data:/data"} <= set(srun["srun"])
    assert srun["command"] == ["fake-trainer", "-m", "recipes.convert", *args]
    assert [r["SLURM_PROCID"] for r in stub_log(env) if "task" in r] == ["0", "1", "2", "3"]
    assert requeues(env) == []
