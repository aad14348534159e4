import subprocess
import sys

import torch

from tests.dist import REPO_ROOT, free_port
from nemo_repo.model import compat

WORKER = REPO_ROOT / "tests/model/canary_worker.py"


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), mode, str(free_port())], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin"})


def test_canary_megatron_still_needs_the_patches_on_cpu():
    """If this fails, a megatron/torch upgrade changed what must be patched: re-measure
    (one patch at a time) and update compat.py and the notes."""
    if torch.cuda.is_available():
        return
    done = _run("unpatched")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "CANARY-FAIL AssertionError: Torch not compiled with CUDA enabled" in done.stdout, done.stdout


def test_patched_forward_backward_runs():
    done = _run("patched")
    assert done.returncode == 0 and "CANARY-OK" in done.stdout, done.stdout + done.stderr[-3000:]


def test_idempotent_and_noop_with_cuda(monkeypatch):
    if torch.cuda.is_available():
        assert compat.apply_cpu_compat() is False
        return
    assert compat.apply_cpu_compat() is True
    zeros = torch.zeros
    assert compat.apply_cpu_compat() is True
    assert torch.zeros is zeros                    # not wrapped twice
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compat.apply_cpu_compat() is False      # a GPU machine is left alone
