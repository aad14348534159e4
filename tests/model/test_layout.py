import pytest
import torch

from nemo_repo.model.parallel import LayoutError, ParallelConfig, validate_layout
from nemo_repo.model.presets import PRESETS, get_preset


def _check(world, tp=1, pp=1, mbs=1, gbs=8, model="tiny_llama", **overrides):
    validate_layout(ParallelConfig(tp, pp, mbs, gbs), get_preset(model, **overrides), world)


@pytest.mark.parametrize("kwargs, message", [
    (dict(world=6, tp=4), "world size 6 is not divisible by TP*PP"),
    (dict(world=8, tp=8), "does not divide num_attention_heads=4"),
    (dict(world=4, tp=4), "does not divide num_query_groups (KV heads)=2"),
    (dict(world=2, tp=2, ffn_hidden_size=129), "does not divide ffn_hidden_size=129"),
    (dict(world=2, tp=2, make_vocab_size_divisible_by=1, vocab_size=321, num_attention_heads=2,
          num_query_groups=2), None),
    (dict(world=3, pp=3), "PP=3 does not divide num_layers=4"),
    (dict(world=4, mbs=3, gbs=8), "micro_batch_size*DP = 3*4 = 12 does not divide global_batch_size=8"),
    (dict(world=2, tp=2, model="qwen2_5_0_5b"), None),
    (dict(world=4, tp=4, model="qwen2_5_0_5b"), "num_attention_heads=14"),
    (dict(world=6, tp=3, model="smollm2_135m", gbs=6), None),
])
def test_layout_errors_before_allocation(kwargs, message, monkeypatch):
    # any allocation of a model or process group would go through these: make them explode
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda *a, **k: pytest.fail("process group created"))
    if message is None:
        _check(**kwargs)
        return
    with pytest.raises(LayoutError) as error:
        _check(**kwargs)
    assert message in str(error.value)


def test_initialize_parallel_validates_first(monkeypatch):
    from nemo_repo.model import parallel
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda *a, **k: pytest.fail("process group created"))
    with pytest.raises(LayoutError, match="world size 3 is not divisible by TP\\*PP = 2\\*1"):
        parallel.initialize_parallel(ParallelConfig(tensor_model_parallel_size=2), get_preset("tiny_llama"))


def test_bad_config_values():
    with pytest.raises(LayoutError, match="micro_batch_size"):
        ParallelConfig(micro_batch_size=0)
    with pytest.raises(ValueError, match="normalization"):
        get_preset("tiny_llama", normalization="BatchNorm")
    with pytest.raises(KeyError, match="unknown model preset"):
        get_preset("gpt5")


def test_true_shapes_and_padding():
    qwen = PRESETS["qwen2_5_0_5b"]
    assert (qwen.num_layers, qwen.hidden_size, qwen.ffn_hidden_size, qwen.num_attention_heads,
            qwen.num_query_groups, qwen.vocab_size, qwen.add_qkv_bias, qwen.tie_embeddings,
            qwen.rotary_base, qwen.norm_epsilon) == (24, 896, 4864, 14, 2, 151936, True, True, 1e6, 1e-6)
    assert qwen.padded_vocab_size(1) == 151936 and qwen.padded_vocab_size(2) == 152064
    smol = PRESETS["smollm2_135m"]
    assert (smol.num_layers, smol.hidden_size, smol.ffn_hidden_size, smol.num_attention_heads,
            smol.num_query_groups, smol.vocab_size, smol.rotary_base) == (30, 576, 1536, 9, 3, 49152, 1e5)
    assert PRESETS["llama3_8b"].vocab_size == 128256 and not PRESETS["llama3_8b"].tie_embeddings
    assert PRESETS["mistral_7b_v0_2"].rotary_base == 1e6 and PRESETS["tiny_llama"].padded_vocab_size(2) == 512


def test_transformer_config():
    from nemo_repo.model.presets import to_transformer_config
    config = to_transformer_config(get_preset("qwen2_5_0_5b"), ParallelConfig(tensor_model_parallel_size=2))
    assert config.num_query_groups == 2 and config.add_qkv_bias and not config.add_bias_linear
    assert config.gated_linear_unit and config.normalization == "RMSNorm"
    assert config.layernorm_epsilon == 1e-6 and config.tensor_model_parallel_size == 2
    assert config.use_cpu_initialization == (not torch.cuda.is_available())
