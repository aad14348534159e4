"""GPU smoke suite (`make gpu-test`): the GPU paths CPU CI cannot reach, each a few steps of
tiny_llama on the synthetic benchmark (or a tiny random HF Llama for conversion), with NCCL.

1 GPU: RE-DPO and DPO in fp32 and bf16, padded and packed (megatron's local layer spec), the
Transformer Engine spec when TE imports (its first-step loss must equal the local spec's: same
weights, padded batches), packing refused under TE, checkpoint + resume equal to an uninterrupted
run, `convert import --verify` and `export --verify`. 2+ GPUs: TP=2 and DP=2 equal to 1 GPU.
Every run is a child process with a timeout. The whole suite takes a few minutes on one GPU.
"""

import json
import math
import subprocess
import sys

import pytest

from tests.convert.tiny_models import make_tiny_model
from tests.dist import REPO_ROOT, clean_env, run_workers
from tests.training.runs import STEPS, final_state, ok, records, tiny, train

TRAIN = REPO_ROOT / "recipes" / "train.py"

pytestmark = pytest.mark.gpu
GPU = ("run.device=cuda",)
LOCAL, TE, PACKED = "model.layer_spec=local", "model.layer_spec=transformer_engine", "++data.packing=true"
MATRIX = [("re_dpo", "bf16", "false"), ("re_dpo", "fp32", "true"), ("re_dpo", "bf16", "true"),
          ("dpo", "fp32", "false"), ("dpo", "bf16", "true")]
TWO_GPU_LAYOUTS = {"tp2": "parallel.tensor_model_parallel_size=2",
                   "dp2": "parallel.tensor_model_parallel_size=1"}   # world 2, TP = PP = 1


def matrix_overrides(objective, dtype, packing):
    return (f"robust={'re' if objective == 're_dpo' else 'none'}", f"++model.overrides.dtype={dtype}",
            f"++data.packing={packing}", LOCAL)


# (processes, overrides) of every run below: tests/gpu/test_suite_config.py validates them on CPU
ALL_RUNS = [(1, (LOCAL,)), (1, (PACKED, LOCAL)), (1, (TE,)), (1, (TE, PACKED)),
            (1, (LOCAL, "train.stop_at_step=2")), *((1, matrix_overrides(*m)) for m in MATRIX),
            *((2, (LOCAL, layout)) for layout in TWO_GPU_LAYOUTS.values())]


def _te_available() -> bool:
    from nemo_repo.model.versions import have_transformer_engine

    return have_transformer_engine()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _losses(run_dir):
    return [r["loss"] for r in records(run_dir) if r["split"] == "train"]


def _gpu_run(run_dir, cache, *overrides, nproc=1, timeout=300):
    args = tiny(run_dir, cache, *GPU, *overrides)
    if nproc == 1:
        done = ok(train(args, timeout=timeout))
    else:
        done = run_workers(TRAIN, nproc, args, timeout=timeout)
    assert "run.device=cuda: cuda (nccl)" in done.stdout, done.stdout[-2000:]
    return done


@pytest.fixture(scope="module")
def reference_gpu_run(tmp_path_factory, cache):
    """RE-DPO, fp32, padded, local spec, 1 GPU: what resume, TP=2 and DP=2 are compared with."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    _gpu_run(run_dir, cache, LOCAL)
    return run_dir


def test_re_dpo_fp32_padded(reference_gpu_run):
    losses = _losses(reference_gpu_run)
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    eta = [r["eta"] for r in json.loads((reference_gpu_run / "reliability.json").read_text())]
    assert eta and all(0 < e < 1 for e in eta) and any(e != 0.9 for e in eta)   # eta moved (NCCL int64 sums)


@pytest.mark.parametrize("objective, dtype, packing", MATRIX)
def test_training_step_matrix(tmp_path, cache, objective, dtype, packing):
    run_dir = tmp_path / "run"
    _gpu_run(run_dir, cache, *matrix_overrides(objective, dtype, packing))
    losses = _losses(run_dir)
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["step"] == STEPS and math.isfinite(evaluation["loss"])


def test_packed_equals_padded_at_the_first_step(reference_gpu_run, tmp_path, cache):
    """Same weights, same pairs: packing (block-diagonal masks, local spec) changes no log-prob."""
    run_dir = tmp_path / "run"
    _gpu_run(run_dir, cache, PACKED, LOCAL)
    assert _losses(run_dir)[0] == pytest.approx(_losses(reference_gpu_run)[0], rel=1e-5)


@pytest.mark.skipif(not _te_available(), reason="transformer_engine is not importable here "
                    "(it ships in NGC PyTorch images: make gpu-test GPU_PYTHON=python inside one)")
def test_transformer_engine_spec_matches_local_on_padded_batches(reference_gpu_run, tmp_path, cache):
    run_dir = tmp_path / "run"
    done = _gpu_run(run_dir, cache, TE)
    assert "layer spec transformer_engine" in done.stdout
    losses = _losses(run_dir)
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(_losses(reference_gpu_run)[0], rel=1e-3)


@pytest.mark.skipif(not _te_available(), reason="transformer_engine is not importable here")
def test_packing_is_refused_under_the_transformer_engine_spec(tmp_path, cache):
    done = train(tiny(tmp_path / "run", cache, *GPU, TE, PACKED))
    assert done.returncode == 2 and "data.packing=true is not supported with the Transformer Engine" \
        in done.stderr, done.stderr[-2000:]


def test_checkpoint_and_resume_match_the_uninterrupted_run(reference_gpu_run, tmp_path, cache):
    run_dir = tmp_path / "run"
    _gpu_run(run_dir, cache, LOCAL, "train.stop_at_step=2")
    resumed = _gpu_run(run_dir, cache, LOCAL)
    assert "resumed from" in resumed.stdout
    got, expected = final_state(run_dir), final_state(reference_gpu_run)
    assert _losses(run_dir) == pytest.approx(_losses(reference_gpu_run), rel=1e-5)
    assert [r["eta"] for r in got["reliability"]] == \
        pytest.approx([r["eta"] for r in expected["reliability"]], abs=1e-6)


def _convert(*args):
    done = subprocess.run([sys.executable, "-m", "recipes.convert", *map(str, args)], cwd=REPO_ROOT,
                          env=clean_env(PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_convert_import_and_export_verify_on_the_gpu(tmp_path):
    hf = make_tiny_model("llama", tmp_path / "hf")
    imported = _convert("import", "--hf", hf, "--out", tmp_path / "mcore", "--verify")
    exported = _convert("export", "--checkpoint", tmp_path / "mcore", "--out", tmp_path / "hf_out",
                        "--verify")
    for log in (imported, exported):
        assert "[verify]" in log and "OK" in log, log


@pytest.mark.gpu(min_gpus=2)
@pytest.mark.parametrize("layout", TWO_GPU_LAYOUTS.values(), ids=TWO_GPU_LAYOUTS.keys())
def test_two_gpus_equal_one(reference_gpu_run, tmp_path, cache, layout):
    """TP=2 and DP=2 (two processes with TP=PP=1) against the 1-GPU run."""
    run_dir = tmp_path / "run"
    _gpu_run(run_dir, cache, LOCAL, layout, nproc=2)
    assert _losses(run_dir) == pytest.approx(_losses(reference_gpu_run), rel=1e-4)
    eta = [r["eta"] for r in json.loads((run_dir / "reliability.json").read_text())]
    expected = [r["eta"] for r in json.loads((reference_gpu_run / "reliability.json").read_text())]
    assert eta == pytest.approx(expected, abs=1e-5)
