"""HF <-> Megatron weight conversion with megatron-bridge, on nemo_repo's own GPTModel build.

The Megatron side is exactly what training builds (model/policy.py: local layer spec, our
ModelConfig), so a converted checkpoint loads with `model.weights.load_model_weights` and
parameter names match `build_policy`. megatron-bridge supplies the per-architecture name and
layout mappings (fused QKV, gated MLP, TP/PP scatter and gather); this module adds what it lacks:
vocabulary padding (Megatron pads to make_vocab_size_divisible_by * TP, HF does not), a coverage
check (the bridge only warns about weights it cannot map or find), and the HF folder's assets.

A converted ("weights") checkpoint directory holds:
    dist_checkpointing files   {"model": GPTModel.sharded_state_dict()} (model/weights.py)
    nemo_repo_model.json       ModelConfig fields, HF architecture, source path, layout used
                               (model/imported.py)
    config.json, generation_config.json, tokenizer files   copied from the HF folder
"""

import json
import shutil
from pathlib import Path

import torch

from nemo_repo.model.imported import write_metadata
from nemo_repo.model.presets import ModelConfig
from nemo_repo.model.versions import require_private
from nemo_repo.ranks import rank

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
# Copied from the HF folder into a converted checkpoint, and from there into an exported folder.
HF_ASSET_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
                  "added_tokens.json", "chat_template.jinja")
_VOCAB_KEYS = ("model.embed_tokens.weight", "lm_head.weight")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class ConversionError(ValueError):
    """Bad conversion input: a missing or corrupt file, an unsupported model, a mapping gap."""


# ---------------------------------------------------------------------------- HF config -> ours
def read_hf_config(path):
    """The transformers config of an HF folder (or of a converted checkpoint, which keeps a copy),
    checked to be a supported architecture."""
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConversionError(f"{path}: no config.json (expected a Hugging Face model folder)")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as error:  # transformers raises several types for a bad config.json
        raise ConversionError(f"{path / 'config.json'}: cannot be read: {error}") from error
    architecture = hf_architecture(config, path)
    if getattr(config, "rope_scaling", None):
        raise ConversionError(f"{path / 'config.json'}: rope_scaling={config.rope_scaling} is not "
                              f"supported (ModelConfig has no RoPE scaling)")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ConversionError(f"{path / 'config.json'}: hidden_act={config.hidden_act!r}; only "
                              f"'silu' (SwiGLU) is supported for {architecture}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ConversionError(f"{path / 'config.json'}: attention_bias/mlp_bias on {architecture} "
                              f"are not supported")
    return config


def hf_architecture(config, path="<config>") -> str:
    architectures = list(getattr(config, "architectures", None) or [])
    supported = [name for name in architectures if name in SUPPORTED_ARCHITECTURES]
    if not supported:
        raise ConversionError(f"{path}: architecture {architectures or '(none)'} is not supported; "
                              f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    return supported[0]


def model_config_from_hf(source, name: str | None = None, dtype: str = "fp32") -> ModelConfig:
    """Our ModelConfig for an HF folder / converted checkpoint path, or a transformers config."""
    config = read_hf_config(source) if isinstance(source, (str, Path)) else source
    architecture = hf_architecture(config)
    if dtype not in _DTYPES:
        raise ConversionError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelConfig(
        name=name or (Path(source).name if isinstance(source, (str, Path)) else config.model_type),
        num_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
        ffn_hidden_size=config.intermediate_size, num_attention_heads=heads,
        num_query_groups=getattr(config, "num_key_value_heads", None) or heads,
        vocab_size=config.vocab_size, max_position_embeddings=config.max_position_embeddings,
        normalization="RMSNorm", norm_epsilon=config.rms_norm_eps, activation="swiglu",
        position_embedding_type="rope", rotary_base=float(config.rope_theta),
        add_bias_linear=False, add_qkv_bias=architecture == "Qwen2ForCausalLM",
        tie_embeddings=bool(config.tie_word_embeddings),
        kv_channels=head_dim if head_dim * heads != config.hidden_size else None,
        init_method_std=config.initializer_range, dtype=dtype)


def check_hf_weights(path) -> list[Path]:
    """The safetensors files of an HF folder; each must exist and have a readable header."""
    from safetensors import safe_open

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as error:
            raise ConversionError(f"{index}: not a safetensors index ({error})") from error
        files = sorted({path / name for name in weight_map.values()})
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{path}: no weight file (expected model.safetensors or "
                              f"model.safetensors.index.json; .bin checkpoints are not supported)")
    for file in files:
        if not file.is_file():
            raise ConversionError(f"{file}: weight file listed in {index.name} is missing")
        try:
            with safe_open(file, framework="pt") as handle:
                handle.keys()
        except Exception as error:  # safetensors raises its own error type for a corrupt header
            raise ConversionError(f"{file}: corrupt safetensors file ({error})") from error
    return files


# ---------------------------------------------------------------------------- the bridge
def _model_bridge(hf_config, model_config: ModelConfig, tensor_parallel: int):
    """megatron-bridge's bridge for the architecture, padding/trimming the vocabulary rows."""
    import transformers

    from nemo_repo.convert.compat import import_bridge

    import_bridge()
    from megatron.bridge.models.conversion.model_bridge import get_model_bridge

    architecture = hf_architecture(hf_config)
    base = type(get_model_bridge(getattr(transformers, architecture)))
    vocab, padded = model_config.vocab_size, model_config.padded_vocab_size(tensor_parallel)

    class VocabPaddingBridge(base):
        def maybe_modify_loaded_hf_weight(self, hf_param, hf_state_dict):
            weights = super().maybe_modify_loaded_hf_weight(hf_param, hf_state_dict)
            if hf_param in _VOCAB_KEYS:
                if weights.shape[0] != vocab:
                    raise ConversionError(f"{hf_param} has {weights.shape[0]} rows but config.json "
                                          f"says vocab_size={vocab}")
                weights = torch.cat([weights, weights.new_zeros(padded - vocab, *weights.shape[1:])])
            return weights

        def maybe_modify_converted_hf_weight(self, task, converted, hf_state_dict):
            converted = super().maybe_modify_converted_hf_weight(task, converted, hf_state_dict)
            return {key: value[:vocab] if key in _VOCAB_KEYS else value
                    for key, value in converted.items()}

    bridge = VocabPaddingBridge()
    bridge.hf_config = hf_config
    return bridge


def _tensor_parallel_size() -> int:
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_world_size()


def _check_coverage(bridge, chunks, model_config: ModelConfig, hf_keys, where: str) -> None:
    """Every Megatron parameter must map to HF weights that exist, and every HF weight must be
    used: the bridge itself only logs a warning and leaves the parameter as initialised."""
    global_names = require_private(bridge, "_megatron_global_param_names_all_pp_ranks", "megatron-bridge")
    names = global_names(chunks)   # collective over PP
    registry = bridge.mapping_registry()
    needed, unmapped = set(), []
    for name in names:
        if model_config.tie_embeddings and name.startswith("output_layer."):
            continue
        mapping = registry.megatron_to_hf_lookup(name)
        if mapping is None:
            unmapped.append(name)
            continue
        hf = mapping.hf_param
        needed.update([hf] if isinstance(hf, str) else hf.values())
    hf_keys = set(hf_keys)
    ignorable = {"lm_head.weight"} if model_config.tie_embeddings else set()
    missing = sorted(needed - hf_keys)
    unused = sorted(key for key in hf_keys - needed - ignorable if not key.endswith("inv_freq"))
    problems = []
    if unmapped:
        problems.append(f"no HF mapping for Megatron parameter(s) {unmapped[:5]}")
    if missing:
        problems.append(f"{len(missing)} weight(s) missing, e.g. {missing[:5]}")
    if unused:
        problems.append(f"{len(unused)} weight(s) not used by the model config, e.g. {unused[:5]}")
    if problems:
        raise ConversionError(f"{where}: weights do not match config.json: " + "; ".join(problems))


def load_hf_weights(chunks, hf_dir, model_config: ModelConfig) -> None:
    """Collective: copy the HF folder's weights into `chunks` (our GPTModel, any TP/PP)."""
    from nemo_repo.convert.compat import import_bridge

    import_bridge()
    from megatron.bridge.models.hf_pretrained.causal_lm import PreTrainedCausalLM

    hf_dir = Path(hf_dir)
    check_hf_weights(hf_dir)
    hf_config = read_hf_config(hf_dir)
    bridge = _model_bridge(hf_config, model_config, _tensor_parallel_size())
    source = PreTrainedCausalLM(hf_dir)
    _check_coverage(bridge, chunks, model_config, source.state.source.get_all_keys(), str(hf_dir))
    bridge.load_weights_hf_to_megatron(source, chunks)


class _ExportTarget:
    """What the bridge reads from an HF model when exporting: its config and its weight names."""

    def __init__(self, hf_config):
        from megatron.bridge.models.hf_pretrained.state import StateDict
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            keys = list(AutoModelForCausalLM.from_config(hf_config).state_dict())
        if hf_config.tie_word_embeddings:
            keys.remove("lm_head.weight")
        self.config = hf_config
        self.state = StateDict(dict.fromkeys(keys))
        self.model_name_or_path = None


def export_hf_weights(chunks, hf_config, model_config: ModelConfig, dtype=None) -> dict | None:
    """Collective: the full HF state dict (rank 0; None elsewhere), cast to `dtype` if given."""
    from nemo_repo.convert.compat import import_bridge

    import_bridge()
    bridge = _model_bridge(hf_config, model_config, _tensor_parallel_size())
    target = _ExportTarget(hf_config)
    _check_coverage(bridge, chunks, model_config, target.state.source.get_all_keys(), "export")
    weights = {}
    for name, tensor in bridge.stream_weights_megatron_to_hf(chunks, target, cpu=True,
                                                             show_progress=False):
        if rank() == 0:   # a copy: the bridge yields views of fused / padded tensors, which
            # huggingface_hub's safetensors writer refuses (and which would keep those alive)
            weights[name] = tensor.to(dtype=dtype or tensor.dtype, memory_format=torch.contiguous_format,
                                      copy=True)
    return weights if rank() == 0 else None


def _copy_assets(source: Path, target: Path, skip=()) -> None:
    for name in HF_ASSET_FILES:
        if name not in skip and (source / name).is_file():
            shutil.copy2(source / name, target / name)


def save_hf_folder(weights: dict, out_dir, assets_dir, dtype: torch.dtype,
                   max_shard_size: str = "5GB") -> None:
    """Write an HF folder (rank 0 only): safetensors shards (+ index), config.json with the
    exported dtype, generation config and tokenizer files from `assets_dir`."""
    from huggingface_hub import save_torch_state_dict
    from transformers import AutoConfig

    out_dir, assets_dir = Path(out_dir), Path(assets_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(weights, out_dir, max_shard_size=max_shard_size)
    config = AutoConfig.from_pretrained(assets_dir)
    config.torch_dtype = dtype
    config.save_pretrained(out_dir)
    _copy_assets(assets_dir, out_dir, skip=("config.json",))


# ---------------------------------------------------------------------------- converted checkpoint
def write_converted(directory, model_config: ModelConfig, hf_dir, layout: dict) -> None:
    """Rank 0: the imported-model metadata and HF assets next to a weights checkpoint."""
    directory, hf_dir = Path(directory), Path(hf_dir)
    write_metadata(directory, model_config, hf_architecture(read_hf_config(hf_dir)), hf_dir, layout)
    _copy_assets(hf_dir, directory)


def find_hf_assets(checkpoint_dir, source=None, init_from=None) -> Path:
    """The folder holding config.json + tokenizer for `checkpoint_dir`: `source` when given, else
    the checkpoint itself (a converted one), else `init_from` (for a training checkpoint, the
    `model.init_from` its config recorded)."""
    checkpoint_dir = Path(checkpoint_dir)
    if source is not None:
        candidates = [Path(source)]
    else:
        candidates = [checkpoint_dir]
        if init_from:
            candidates.append(Path(init_from).expanduser())
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise ConversionError(f"{checkpoint_dir}: cannot find the HF config for this checkpoint "
                          f"(looked in {', '.join(map(str, candidates))}); pass --source <HF folder "
                          f"or converted checkpoint>")


def check_megatron_checkpoint(directory) -> Path:
    directory = Path(directory)
    if not (directory / "metadata.json").is_file():
        raise ConversionError(f"{directory}: not a dist_checkpointing directory (no metadata.json)")
    return directory
