"""training.config.check_machine: run.device must exist on the machine that runs the job, and the
layer spec it implies decides whether packing is allowed (refused under Transformer Engine, whose
causal attention ignores the block-diagonal mask). GPUs and TE are faked: the decision is CPU logic."""

import subprocess
import sys

import pytest
import torch

from nemo_repo import device
from nemo_repo.model import presets
from nemo_repo.training.config import ConfigError, check_machine
from tests.dist import REPO_ROOT, clean_env
from tests.recipes.test_recipes import settings_for


@pytest.fixture
def gpu_with_te(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(presets, "have_transformer_engine", lambda: True)


@pytest.fixture(autouse=True)
def no_device_selected(monkeypatch):
    monkeypatch.setattr(device, "_selected", None)


def _check(*overrides):
    return check_machine(settings_for(*overrides))


@pytest.mark.parametrize("overrides, spec", [
    (("run.device=auto", "++data.packing=false"), "transformer_engine"),
    (("run.device=cuda", "model.layer_spec=local", "++data.packing=true"), "local"),
    (("run.device=cpu", "++data.packing=true"), "local"),              # the CPU never uses TE
])
def test_layer_spec_on_a_gpu_machine_with_te(gpu_with_te, overrides, spec):
    assert _check(*overrides) == spec


@pytest.mark.parametrize("overrides", [("run.device=auto",), ("run.device=cuda",),
                                       ("run.device=cuda", "model.layer_spec=transformer_engine")])
def test_packing_is_refused_under_transformer_engine(gpu_with_te, overrides):
    with pytest.raises(ConfigError, match="data.packing=true is not supported with the Transformer "
                                          "Engine layer spec .* model.layer_spec=local"):
        _check(*overrides, "++data.packing=true")


def test_on_this_cpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _check("run.device=auto", "++data.packing=true") == "local"
    with pytest.raises(ConfigError, match="run.device=cuda but torch .* sees no GPU"):
        _check("run.device=cuda")
    with pytest.raises(ConfigError, match="layer_spec=transformer_engine needs a CUDA device"):
        _check("run.device=cpu", "model.layer_spec=transformer_engine")
    with pytest.raises(ConfigError, match="layer_spec must be one of auto, local, transformer_engine"):
        _check("model.layer_spec=te")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_exits_2_before_building_anything(tmp_path):
    done = subprocess.run([sys.executable, "-m", "recipes.train", f"run.dir={tmp_path / 'run'}",
                           "run.device=cuda"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=clean_env(PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "config error: run.device=cuda but torch" in done.stderr
    assert not (tmp_path / "run").exists()
