"""Bad conversion input fails before any work with a message naming the file or the field;
HF configs of the published models map onto our presets."""

import json

import pytest
import transformers

from nemo_repo.convert.bridge import ConversionError, model_config_from_hf
from nemo_repo.model.presets import get_preset
from recipes.convert import main
from recipes.errors import EXIT_INVALID_INPUT
from tests.convert.tiny_models import make_tiny_model
from tests.training.runs import run_module


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_model("llama", tmp_path_factory.mktemp("hf") / "llama")


def _copy(source, target, skip=()):
    target.mkdir()
    for path in source.iterdir():
        if path.name not in skip:
            (target / path.name).write_bytes(path.read_bytes())
    return target


def _fails(capsys, argv, *fragments):
    assert main([str(a) for a in argv]) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_missing_weight_file(tiny_llama, tmp_path, capsys):
    hf = _copy(tiny_llama, tmp_path / "hf", skip=("model.safetensors",))
    _fails(capsys, ["import", "--hf", hf, "--out", tmp_path / "out"], str(hf), "no weight file")


def test_index_names_missing_shard(tiny_llama, tmp_path, capsys):
    hf = _copy(tiny_llama, tmp_path / "hf")
    (hf / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    _fails(capsys, ["import", "--hf", hf, "--out", tmp_path / "out"],
           "model-00002-of-00002.safetensors", "is missing")


def test_corrupt_weight_file(tiny_llama, tmp_path, capsys):
    hf = _copy(tiny_llama, tmp_path / "hf")
    (hf / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    _fails(capsys, ["import", "--hf", hf, "--out", tmp_path / "out"],
           str(hf / "model.safetensors"), "corrupt safetensors")


def test_unsupported_architecture(tmp_path, capsys):
    hf = tmp_path / "gpt2"
    transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, architectures=["GPT2LMHeadModel"]) \
        .save_pretrained(hf)
    _fails(capsys, ["import", "--hf", hf, "--out", tmp_path / "out"],
           "GPT2LMHeadModel", "not supported", "LlamaForCausalLM")


def test_rope_scaling_refused(tiny_llama, tmp_path):
    hf = _copy(tiny_llama, tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="rope_scaling"):
        model_config_from_hf(hf)


def test_tp_not_dividing_heads(tiny_llama, tmp_path, capsys):
    _fails(capsys, ["import", "--hf", tiny_llama, "--out", tmp_path / "out", "--tp", "3"],
           "TP=3 does not divide num_attention_heads=4")


def test_world_size_must_be_tp_times_pp(tiny_llama, tmp_path, capsys):
    _fails(capsys, ["import", "--hf", tiny_llama, "--out", tmp_path / "out", "--tp", "2"],
           "world size 1", "TP*PP")


def test_output_must_be_empty(tiny_llama, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    _fails(capsys, ["import", "--hf", tiny_llama, "--out", tmp_path / "out"], "not empty")


def test_export_needs_a_checkpoint(tiny_llama, tmp_path, capsys):
    _fails(capsys, ["export", "--checkpoint", tiny_llama, "--out", tmp_path / "out"],
           str(tiny_llama), "not a dist_checkpointing directory")


def test_weights_not_matching_config(tiny_llama, tmp_path):
    """config.json says 2 layers, the weight file has 4: the bridge alone would only warn. This
    one builds the megatron model, so it runs in a child process (megatron's CPU patches and
    process group stay out of the test process)."""
    hf = _copy(tiny_llama, tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (hf / "config.json").write_text(json.dumps(config))
    done = run_module("recipes.convert", ["import", "--hf", hf, "--out", tmp_path / "out"], timeout=240)
    assert done.returncode == EXIT_INVALID_INPUT, done.stderr[-3000:]
    for fragment in (str(hf), "not used by the model config", "model.layers.2."):
        assert fragment in done.stderr, done.stderr[-3000:]


_PUBLISHED = {   # the published config.json values that matter for the shape
    "smollm2_135m": ("LlamaConfig", "LlamaForCausalLM", "fp32", dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
        rms_norm_eps=1e-5, initializer_range=0.041666666666666664, tie_word_embeddings=True)),
    "qwen2_5_0_5b": ("Qwen2Config", "Qwen2ForCausalLM", "fp32", dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
        rope_theta=1000000.0, rms_norm_eps=1e-6, initializer_range=0.02, tie_word_embeddings=True)),
    "mistral_7b_v0_2": ("MistralConfig", "MistralForCausalLM", "bf16", dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768,
        rope_theta=1000000.0, rms_norm_eps=1e-5, initializer_range=0.02, sliding_window=None,
        tie_word_embeddings=False)),
    "llama3_8b": ("LlamaConfig", "LlamaForCausalLM", "bf16", dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
        rope_theta=500000.0, rms_norm_eps=1e-5, initializer_range=0.02, tie_word_embeddings=False)),
}


@pytest.mark.parametrize("preset", sorted(_PUBLISHED))
def test_model_config_from_hf_matches_preset(preset):
    config_class, architecture, dtype, values = _PUBLISHED[preset]
    config = getattr(transformers, config_class)(architectures=[architecture], **values)
    assert model_config_from_hf(config, name=preset, dtype=dtype) == get_preset(preset)
