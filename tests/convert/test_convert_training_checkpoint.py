"""A training checkpoint (one optimizer step from an imported HF model, saved at PP=2 with
training/checkpoint.save_checkpoint: model + optimizer + common config) exports to an HF folder at
TP=2, found through the config's model.init_from; transformers reloads it, its logits match the
Megatron model's within 1e-5, and the weights moved away from the original."""

import re

import pytest
import torch
from safetensors.torch import load_file

from tests.convert.tiny_models import make_tiny_model
from tests.dist import REPO_ROOT, run_workers

pytestmark = pytest.mark.distributed


def test_training_checkpoint_exports(tmp_path):
    hf = make_tiny_model("llama", tmp_path / "hf")
    done = run_workers(REPO_ROOT / "tests/convert/train_export_worker.py", 2,
                       [1, 2, 2, 1, hf, tmp_path / "imported", tmp_path / "ckpts", tmp_path / "out"],
                       timeout=180)
    assert (tmp_path / "ckpts" / "step_00000001" / "COMPLETE").is_file()
    difference = re.findall(r"\[verify\] export: max \|logit difference\| = (\S+)", done.stdout)
    assert len(difference) == 1 and float(difference[0]) <= 1e-5, done.stdout[-2000:]

    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    original = load_file(hf / "model.safetensors")
    exported = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(exported) == sorted(original)
    moved = [name for name in original if not torch.equal(original[name], exported[name])]
    assert len(moved) > len(original) // 2, "one optimizer step should change most weights"
    assert reloaded.config.num_hidden_layers == 4
