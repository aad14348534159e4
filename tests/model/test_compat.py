"""nemo_repo.model.compat: each CPU patch is still needed, all of them are enough, they touch only
megatron's calls, and they come off again.

How the suite keeps torch unpatched: every test that runs megatron models does so in a child
process (torchrun workers, the recipes as subprocesses, the canary's forked children); the pytest
process itself never keeps the patches (tests/conftest.py fails any test that leaves them on).
"""

import subprocess
import sys

import pytest
import torch

from nemo_repo.model import compat
from tests.dist import REPO_ROOT, clean_env

WORKER = REPO_ROOT / "tests/model/canary_worker.py"
# Where megatron-core 0.16.1 fails on CPU without each patch (file under megatron/core: function).
NEEDED_AT = {
    "rng": "tensor_parallel/random.py:add",
    "current_device": "distributed/param_and_grad_buffer.py:__init__",
    "cuda_factories": "optimizer/optimizer.py:__init__",
    "synchronize": "dist_checkpointing/strategies/filesystem_async.py:preload_tensors",
    "tensor_cuda": "optimizer/distrib_optimizer.py:get_parameter_state_dp_zero",
    "tensor_type": "optimizer/distrib_optimizer.py:_build_model_and_main_param_groups",
}


def test_canary_each_patch_is_needed_and_all_are_enough():
    """If this fails, a megatron-core / torch upgrade changed what must be patched: re-measure with
    `python tests/model/canary_worker.py all without:<patch> ...`, update compat.py and NEEDED_AT."""
    assert set(NEEDED_AT) == set(compat.PATCH_NAMES)
    variants = ["all", *(f"without:{name}" for name in compat.PATCH_NAMES)]
    done = subprocess.run([sys.executable, str(WORKER), *variants], cwd=REPO_ROOT, timeout=240,
                          capture_output=True, text=True,
                          env=clean_env(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1"))
    lines = {line.split()[1]: line for line in done.stdout.splitlines() if line.startswith("CANARY ")}
    assert done.returncode == 0 and len(lines) == len(variants), done.stdout + done.stderr[-4000:]
    assert lines["all"] == "CANARY all OK", done.stderr[-4000:]
    for name, where in NEEDED_AT.items():
        assert lines[f"without:{name}"].startswith(f"CANARY without:{name} FAIL at {where} "), \
            lines[f"without:{name}"]


def _megatron_call(source: str):
    """Evaluate `source` as if written inside a megatron module."""
    return eval(source, {"__name__": "megatron.core.fake", "torch": torch})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU redirects on a CPU-only torch")
def test_patches_reach_megatron_only_and_come_off():
    originals = (torch.zeros, torch.Tensor.type, torch.Tensor.cuda, torch.cuda.current_device,
                 torch.cuda.synchronize, torch.cuda.get_rng_state)
    try:
        assert compat.apply_cpu_compat() is True
        zeros = torch.zeros
        assert compat.apply_cpu_compat() is True and torch.zeros is zeros     # not wrapped twice
        assert _megatron_call('torch.zeros(2, device="cuda")').device.type == "cpu"
        assert _megatron_call("torch.cuda.current_device()") == torch.device("cpu")
        assert _megatron_call("torch.ones(1).type()") == "torch.cuda.FloatTensor"
        assert _megatron_call("torch.ones(1).cuda()").device.type == "cpu"
        # everybody else still gets torch's own behaviour
        assert torch.ones(1).type() == "torch.FloatTensor"
        with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
            torch.zeros(2, device="cuda")
    finally:
        compat.remove_cpu_compat()
    assert not compat.is_applied()
    assert (torch.zeros, torch.Tensor.type, torch.Tensor.cuda, torch.cuda.current_device,
            torch.cuda.synchronize, torch.cuda.get_rng_state) == originals


def test_other_megatron_version_warns_and_unknown_patch_is_refused(monkeypatch):
    from megatron.core import package_info

    monkeypatch.setattr(package_info, "__version__", "0.17.0")
    with pytest.warns(RuntimeWarning, match="written for megatron-core 0.16.1, found 0.17.0"):
        compat.check_megatron_version()
    with pytest.raises(ValueError, match="unknown compat patch"):
        compat.apply_cpu_compat(exclude=("fp8",))
    assert not compat.is_applied()
