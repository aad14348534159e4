"""Start tiny training runs from tests and read what they wrote (one home for every test that
runs recipes end to end: resume, the mode matrix, precomputed references, Slurm)."""

import json
import os
import sys

from nemo_repo.training import outputs
from nemo_repo.training.metrics import METRICS_FILE
from tests.dist import REPO_ROOT, clean_env, run_in_own_group

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
    done = run_in_own_group([sys.executable, "-m", module, *map(str, args)], env, timeout,
                            merge_stderr=False)
    if done.returncode is None:
        raise AssertionError(f"{module} timed out after {timeout}s\n{done.stdout}\n{done.stderr[-5000:]}")
    return done


def train(args, timeout=120):
    return run_module("recipes.train", args, timeout)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def records(run_dir):
    """metrics.jsonl without wall-clock fields."""
    return [{k: v for k, v in record.items() if not k.startswith("time/")}
            for record in outputs.read_records(run_dir / METRICS_FILE)]


def final_state(run_dir):
    return {"metrics": records(run_dir),
            "reliability": json.loads((run_dir / outputs.RELIABILITY_FILE).read_text()),
            "pair_weights": (run_dir / outputs.PAIR_WEIGHTS_FILE).read_text(),
            "eval": json.loads((run_dir / outputs.EVAL_FILE).read_text())}
