"""Start tiny training runs from tests and read what they wrote (one home for every test that
runs recipes end to end: resume, the mode matrix, precomputed references, Slurm)."""

import json
import os
import signal
import subprocess
import sys
import tempfile

from nemo_repo.training import outputs
from nemo_repo.training.logging import METRICS_FILE
from tests.dist import REPO_ROOT, clean_env

STEPS = 4


def tiny(run_dir, cache_dir, *extra, steps=STEPS):
    """Overrides of a tiny tiny_cpu run: 64 synthetic pairs, 8 per step, eval / checkpoint / eta
    record every 2 steps, pair_weights.jsonl from a full final pass (4 steps visit half of the
    pairs: the tests that check every pair's w need it; train.final_pass=last_visit replaces it).
    An `extra` override of one of these keys replaces it."""
    defaults = [f"run.dir={run_dir}", f"++data.cache_dir={cache_dir}", "recipe=tiny_cpu",
                "data.synthetic.n_train=64", "data.synthetic.n_validation=16",
                "parallel.micro_batch_size=4", "parallel.global_batch_size=8",
                f"train.max_steps={steps}", "train.eval_interval=2", "checkpoint.interval=2",
                "checkpoint.keep_last=3", "logging.progress=false", "logging.tensorboard=false",
                "logging.eta_log_interval=2", "train.final_pass=full"]
    replaced = {override.split("=", 1)[0] for override in extra}
    return [*(d for d in defaults if d.split("=", 1)[0] not in replaced), *extra]


def run_module(module, args, timeout=120):
    """`python -m module args` in its own process group, which is killed afterwards (a crashed
    run may leave child processes behind, as a real crash would). Raises AssertionError on
    timeout; returns the completed process."""
    path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = clean_env(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT,
                                   env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(process.args, returncode, out.read(), err.read())
    if returncode is None:
        raise AssertionError(f"{module} timed out after {timeout}s\n{done.stdout}\n{done.stderr[-5000:]}")
    return done


def train(args, timeout=120):
    return run_module("recipes.train", args, timeout)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def records(run_dir):
    """metrics.jsonl without wall-clock fields."""
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def final_state(run_dir):
    return {"metrics": records(run_dir),
            "reliability": json.loads((run_dir / outputs.RELIABILITY_FILE).read_text()),
            "pair_weights": (run_dir / outputs.PAIR_WEIGHTS_FILE).read_text(),
            "eval": json.loads((run_dir / outputs.EVAL_FILE).read_text())}
