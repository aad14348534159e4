"""HF -> Megatron -> HF is bit-exact (tensor values) at TP=1, TP=2 and PP=2, also when a checkpoint
is exported at another layout than it was imported at; Megatron logits match HF within 1e-5 (fp32)
after every import and export."""

import re

import pytest
from safetensors.torch import load_file

from tests.convert.tiny_models import make_tiny_model
from tests.dist import REPO_ROOT, run_workers

WORKER = REPO_ROOT / "tests/convert/convert_worker.py"
pytestmark = pytest.mark.distributed

# (TP, PP, families) per torchrun world; mistral shares the Llama mapping, one layout suffices.
LAYOUTS = {(2, 1): ("llama", "qwen2"), (1, 2): ("llama", "qwen2"), (1, 1): ("llama", "qwen2", "mistral")}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    work = tmp_path_factory.mktemp("convert")
    for family in ("llama", "qwen2", "mistral"):
        make_tiny_model(family, work / family)
    logs = []
    for (tp, pp), families in LAYOUTS.items():
        tasks = [f"import:{name}" for name in families]
        tasks += [f"export:{name}.tp{tp}pp{pp}:{name}.tp{tp}pp{pp}.hf" for name in families]
        if (tp, pp) == (1, 1):   # re-shard: export the TP=2 and PP=2 checkpoints at TP=1
            tasks += [f"export:{name}.tp{t}pp{p}:{name}.tp{t}pp{p}.as_tp1.hf"
                      for name in ("llama", "qwen2") for t, p in ((2, 1), (1, 2))]
        logs.append(run_workers(WORKER, tp * pp, [tp, pp, work, *tasks], timeout=240).stdout)
    return work, "\n".join(logs)


CASES = [(name, f"tp{tp}pp{pp}") for (tp, pp), names in LAYOUTS.items() for name in names]
CASES += [(name, f"tp{t}pp{p}.as_tp1") for name in ("llama", "qwen2") for t, p in ((2, 1), (1, 2))]


@pytest.mark.parametrize("family,layout", CASES)
def test_roundtrip_is_bit_exact(converted, family, layout):
    work, _ = converted
    original = load_file(work / family / "model.safetensors")
    layout_dir = layout.replace(".as_tp1", "")
    exported = load_file(work / f"{family}.{layout_dir}{'.as_tp1' if 'as_tp1' in layout else ''}.hf"
                         / "model.safetensors")
    assert sorted(exported) == sorted(original)
    for name, tensor in original.items():
        assert exported[name].dtype == tensor.dtype and exported[name].shape == tensor.shape, name
        assert bool((exported[name] == tensor).all()), f"{family} {layout}: {name} differs"


def test_logits_match_hf(converted):
    _, log = converted
    differences = [float(x) for x in re.findall(r"max \|logit difference\| = (\S+)", log)]
    imports = sum(len(names) for names in LAYOUTS.values())
    assert len(differences) == 2 * imports + 4, log[-3000:]
    assert max(differences) <= 1e-5
    assert "FAILED" not in log


def test_converted_checkpoint_layout(converted):
    work, _ = converted
    checkpoint = work / "qwen2.tp2pp1"
    for name in ("metadata.json", "common.pt", "nemo_repo_model.json", "config.json"):
        assert (checkpoint / name).is_file(), name
    import json

    meta = json.loads((checkpoint / "nemo_repo_model.json").read_text())
    assert meta["hf_architecture"] == "Qwen2ForCausalLM" and meta["layout"] == {"tp": 2, "pp": 1}
    assert meta["model_config"]["add_qkv_bias"] and not meta["model_config"]["tie_embeddings"]
