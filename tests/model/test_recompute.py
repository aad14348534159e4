"""model.recompute=full (megatron's full activation recomputation, one layer per checkpoint)
trades time for memory only: the same log-probs and gradients as without it."""

import json

import pytest

from nemo_repo.model.presets import get_preset
from tests.dist import REPO_ROOT, run_workers

WORKER = REPO_ROOT / "tests/model/recompute_worker.py"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("recompute")
    run_workers(WORKER, 1, [out], timeout=180)
    return json.loads((out / "recompute.json").read_text())


def test_recompute_choices():
    assert get_preset("tiny_llama").recompute == "none"
    with pytest.raises(ValueError, match="recompute"):
        get_preset("tiny_llama", recompute="selective")


def test_full_recompute_is_configured(result):
    assert result["none"] is None and result["full"] == "full"


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_full_recompute_equals_no_recompute(result, layout):
    got = result[layout]
    assert got["logp_diff"] <= 1e-6 * max(1.0, got["logp_scale"])
    assert got["grad_diff"] <= 1e-6 * max(1.0, got["grad_scale"])
