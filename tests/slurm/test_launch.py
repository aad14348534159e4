"""recipes/launch.py: the dry run of a 2-node x 8-GPU paper recipe, input validation, time limits."""

import pytest

from recipes import launch
from recipes.errors import EXIT_INVALID_INPUT

PAPER = "recipe=paper/mistral_re_dpo"


def dry_run(capsys, *argv):
    code = launch.main(["--dry-run", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_of_two_nodes_of_eight_gpus_shows_layout_rendezvous_and_overrides(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, _ = dry_run(capsys, "--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu",
                           "--account", "proj", "--time", "1-00:00:00", "--run-dir", str(run_dir),
                           "--container-image", "nvcr.io#nvidia/pytorch:25.01-py3",
                           "--container-mounts", "/scratch:/scratch", "--max-restarts", "3",
                           "--sbatch-arg=--exclusive", "--", PAPER, "train.max_steps=200")
    assert code == 0
    assert "# world size 16 = 2 node(s) x 8 GPU(s); TP=4 PP=1 DP=4;" in out
    assert "# node 0 = MASTER_ADDR (first host of the allocation): ranks 0-7 (LOCAL_RANK 0-7)" in out
    assert "# node 1: ranks 8-15 (LOCAL_RANK 0-7)" in out
    assert "MASTER_PORT=10000 + SLURM_JOB_ID % 50000" in out
    script = out[out.index("#!/bin/bash"):]
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=1-00:00:00",
                 "#SBATCH --signal=B:USR1@600", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --exclusive", f"#SBATCH --output={run_dir}/slurm/%x-%j.out",
                 "#SBATCH --job-name=repo-paper-mistral_re_dpo",
                 "export MAX_RESTARTS=3", "export GPUS_PER_NODE=8",
                 "export CONTAINER_IMAGE='nvcr.io#nvidia/pytorch:25.01-py3'",
                 "export CONTAINER_MOUNTS=/scratch:/scratch",
                 f'set -- {PAPER} train.max_steps=200 run.dir={run_dir} "$@"'):
        assert line + "\n" in script, line
    assert script.count("#SBATCH --nodes=") == 1 and "MASTER_PORT" not in script.split("set --")[0]
    # the body is the template's, and the header ends before the first command
    assert script.endswith(launch.TEMPLATE.read_text().split("set -euo pipefail", 1)[1])
    assert not run_dir.exists()


def test_submission_writes_the_script_and_log_directory_then_calls_sbatch(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(launch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(launch.subprocess, "run", lambda argv, check: calls.append(argv) or
                        type("Done", (), {"returncode": 0})())
    assert launch.main(["--nodes", "1", "--gpus-per-node", "2", "--run-dir", str(tmp_path / "run"),
                        "--", "recipe=tiny_cpu", "parallel=tp2"]) == 0
    script = tmp_path / "run" / "slurm" / "train.sbatch"
    assert calls == [["sbatch", str(script)]]
    assert "#SBATCH --ntasks-per-node=2\n" in script.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "0"], "--nodes must be >= 1, got 0"),
    (["--gpus-per-node", "-1"], "--gpus-per-node must be >= 1"),
    (["--max-restarts", "-1"], "--max-restarts must be >= 0"),
    (["--time", "4h"], "--time '4h' is not a Slurm time limit"),
    (["--time", "00:05:00"], "--signal-seconds 600 must be shorter than --time 00:05:00 (300 s)"),
    (["--signal-seconds", "70000", "--time", "2-00"], "--signal-seconds must be in 1..65535"),
    (["--master-port", "80"], "--master-port must be in 1024..65535"),
    (["--container-mounts", "/a:/a"], "--container-mounts needs --container-image"),
    (["--sbatch-arg", "qos=high"], "must be a long option"),
    (["--", PAPER, "run.dir=/x"], "give the run directory as --run-dir"),
    (["--", PAPER, "train.max_steps"], "'train.max_steps' is not key=value"),
    (["--", "recipe=no_such_recipe"], "overrides do not compose"),
    (["--gpus-per-node", "6", "--", PAPER], "config error at world size 6: parallel: impossible parallel"),
    (["--", PAPER, "train.max_steps=0"], "train.max_steps must be >= 1"),
])
def test_bad_input_exits_2_naming_the_option(tmp_path, capsys, argv, message):
    code, out, err = dry_run(capsys, "--run-dir", str(tmp_path / "run"), *argv)
    assert code == EXIT_INVALID_INPUT and message in err and out == ""


@pytest.mark.parametrize("value, seconds", [("30", 1800), ("30:15", 1815), ("04:00:00", 14400),
                                            ("2-00", 172800), ("1-02:30", 95400), ("1-00:00:05", 86405)])
def test_time_limits_in_every_slurm_form(value, seconds):
    assert launch.time_limit_seconds(value) == seconds
