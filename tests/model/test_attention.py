"""model.core_attention=sdpa (torch's fused attention on megatron's local spec) computes the same
log-probs and gradients as megatron's unfused DotProductAttention, with padded and packed
(block-diagonal masked) batches and grouped-query attention."""

import json

import pytest

from nemo_repo.model.presets import get_preset
from tests.dist import REPO_ROOT, run_workers

WORKER = REPO_ROOT / "tests/model/attention_worker.py"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("attention")
    run_workers(WORKER, 1, [out], timeout=180)
    return json.loads((out / "attention.json").read_text())


def test_sdpa_is_the_local_spec_default():
    assert get_preset("tiny_llama").core_attention == "sdpa"
    with pytest.raises(ValueError, match="core_attention"):
        get_preset("tiny_llama", core_attention="flash")


def test_each_choice_builds_its_module(result):
    assert result["sdpa"] == "SDPADotProductAttention" and result["unfused"] == "DotProductAttention"


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_sdpa_equals_megatron_unfused_attention(result, layout):
    got = result[layout]
    assert got["logp_diff"] <= 1e-5 * max(1.0, got["logp_scale"])
    assert got["grad_diff"] <= 1e-5 * max(1.0, got["grad_scale"])
