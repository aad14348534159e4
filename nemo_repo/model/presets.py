"""Model shapes (ModelConfig), named presets, and the megatron TransformerConfig / layer spec.

Presets hold the true architecture of the published checkpoints (from their HF config.json), so
weights converted with megatron-bridge load into them; `tiny_*` are CPU-sized for tests and demos.

Layer spec (`model.layer_spec`): `transformer_engine` (TE modules, fused kernels; needs CUDA and
transformer_engine), `local` (megatron's own modules; the only one on CPU) or `auto` (TE when the
run's device is CUDA and TE imports, else local). The TE spec uses the causal mask type: TE
ignores the explicit attention mask, which is right for padded batches (right padding under a
causal mask) but not for packed ones, so training refuses `data.packing=true` with it
(training.config.check_machine). megatron saves the local spec's norms under TE's key names, but
TE modules add `_extra_state` entries; checkpoints across specs are untested: keep one spec.
"""

import copy
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from nemo_repo.device import is_cuda
from nemo_repo.model.parallel import ParallelConfig, padded_vocab_size
from nemo_repo.model.versions import have_transformer_engine

LAYER_SPECS = ("auto", "local", "transformer_engine")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int | None          # KV heads (GQA); None = multi-head attention
    vocab_size: int                       # true tokenizer vocabulary (before padding)
    max_position_embeddings: int = 4096
    normalization: str = "RMSNorm"        # RMSNorm | LayerNorm
    norm_epsilon: float = 1e-5
    activation: str = "swiglu"            # swiglu | gelu
    position_embedding_type: str = "rope"  # rope | learned_absolute
    rotary_base: float = 10000.0
    add_bias_linear: bool = False
    add_qkv_bias: bool = False
    tie_embeddings: bool = False
    kv_channels: int | None = None        # head dim; None = hidden / heads
    make_vocab_size_divisible_by: int = 128
    init_method_std: float = 0.02
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    dtype: str = "fp32"                   # fp32 | bf16
    core_attention: str = "sdpa"          # local spec: sdpa (torch fused) | unfused (megatron's)
    layer_spec: str = "auto"              # auto | local | transformer_engine (module docstring)
    recompute: str = "none"               # none | full: each layer's forward again in backward
                                          # (activations of layer inputs only: memory for time)

    def __post_init__(self):
        if self.core_attention not in ("sdpa", "unfused"):
            raise ValueError(f"ModelConfig.core_attention must be sdpa or unfused, got {self.core_attention!r}")
        if self.recompute not in ("none", "full"):
            raise ValueError(f"ModelConfig.recompute must be none or full, got {self.recompute!r}")
        if self.normalization not in ("RMSNorm", "LayerNorm"):
            raise ValueError(f"ModelConfig.normalization must be RMSNorm or LayerNorm, got {self.normalization!r}")
        if self.activation not in ("swiglu", "gelu"):
            raise ValueError(f"ModelConfig.activation must be swiglu or gelu, got {self.activation!r}")
        if self.position_embedding_type not in ("rope", "learned_absolute"):
            raise ValueError("ModelConfig.position_embedding_type must be rope or learned_absolute, "
                             f"got {self.position_embedding_type!r}")
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"ModelConfig.dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.layer_spec not in LAYER_SPECS:
            raise ValueError(f"layer_spec must be one of {', '.join(LAYER_SPECS)}, got {self.layer_spec!r}")
        if self.hidden_size % self.num_attention_heads and self.kv_channels is None:
            raise ValueError(f"ModelConfig.hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}; set kv_channels")

    def padded_vocab_size(self, tensor_parallel: int) -> int:
        return padded_vocab_size(self.vocab_size, self.make_vocab_size_divisible_by, tensor_parallel)

    def to_dict(self) -> dict:
        return asdict(self)


_LLAMA = dict(normalization="RMSNorm", activation="swiglu", position_embedding_type="rope")

PRESETS: dict[str, ModelConfig] = {
    # GPT-2 style block (LayerNorm, GeLU, biases, learned positions) with an untied output layer,
    # so the untied path (Mistral, Llama-3) is exercised on CPU too.
    "tiny_gpt": ModelConfig("tiny_gpt", num_layers=4, hidden_size=64, ffn_hidden_size=256,
                            num_attention_heads=4, num_query_groups=None, vocab_size=256,
                            max_position_embeddings=512, normalization="LayerNorm", activation="gelu",
                            position_embedding_type="learned_absolute", add_bias_linear=True,
                            add_qkv_bias=True, tie_embeddings=False),
    # Llama block (RoPE, RMSNorm, SwiGLU, GQA), tied; vocab 320 pads to 384 (TP1) / 512 (TP2),
    # so tests exercise the padded-vocabulary masking.
    "tiny_llama": ModelConfig("tiny_llama", num_layers=4, hidden_size=64, ffn_hidden_size=128,
                              num_attention_heads=4, num_query_groups=2, vocab_size=320,
                              max_position_embeddings=512, tie_embeddings=True, **_LLAMA),
    "smollm2_135m": ModelConfig("smollm2_135m", num_layers=30, hidden_size=576, ffn_hidden_size=1536,
                                num_attention_heads=9, num_query_groups=3, vocab_size=49152,
                                max_position_embeddings=8192, rotary_base=100000.0, norm_epsilon=1e-5,
                                tie_embeddings=True, init_method_std=0.041666666666666664, **_LLAMA),
    "qwen2_5_0_5b": ModelConfig("qwen2_5_0_5b", num_layers=24, hidden_size=896, ffn_hidden_size=4864,
                                num_attention_heads=14, num_query_groups=2, vocab_size=151936,
                                max_position_embeddings=32768, rotary_base=1000000.0, norm_epsilon=1e-6,
                                add_qkv_bias=True, tie_embeddings=True, **_LLAMA),
    "mistral_7b_v0_2": ModelConfig("mistral_7b_v0_2", num_layers=32, hidden_size=4096,
                                   ffn_hidden_size=14336, num_attention_heads=32, num_query_groups=8,
                                   vocab_size=32000, max_position_embeddings=32768,
                                   rotary_base=1000000.0, norm_epsilon=1e-5, tie_embeddings=False,
                                   dtype="bf16", **_LLAMA),
    "llama3_8b": ModelConfig("llama3_8b", num_layers=32, hidden_size=4096, ffn_hidden_size=14336,
                             num_attention_heads=32, num_query_groups=8, vocab_size=128256,
                             max_position_embeddings=8192, rotary_base=500000.0, norm_epsilon=1e-5,
                             tie_embeddings=False, dtype="bf16", **_LLAMA),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return replace(PRESETS[name], **overrides)


def resolved_layer_spec(model: ModelConfig, cuda: bool | None = None) -> str:
    """"local" or "transformer_engine": what model.layer_spec means for a run on CUDA (`cuda`;
    default: the selected device, nemo_repo.device.is_cuda()). ValueError when
    transformer_engine is asked for but cannot run here."""
    cuda = is_cuda() if cuda is None else cuda
    if model.layer_spec == "local":
        return "local"
    usable = cuda and have_transformer_engine()
    if model.layer_spec == "transformer_engine" and not usable:
        raise ValueError("model.layer_spec=transformer_engine needs a CUDA device and an importable "
                         "transformer_engine" + ("" if cuda else " (this run is on the CPU)") +
                         "; use model.layer_spec=local or auto")
    return "transformer_engine" if usable else "local"


def to_transformer_config(model: ModelConfig, parallel: ParallelConfig):
    """The megatron TransformerConfig for `model` under `parallel`. Fused kernels only with the TE
    spec; on CPU weights are initialised on the CPU; sequence parallel is never enabled."""
    from megatron.core.transformer import TransformerConfig

    on_gpu = is_cuda()
    bf16 = model.dtype == "bf16"
    fused = resolved_layer_spec(model) == "transformer_engine"
    return TransformerConfig(
        num_layers=model.num_layers, hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size, num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups, kv_channels=model.kv_channels,
        normalization=model.normalization, layernorm_epsilon=model.norm_epsilon,
        gated_linear_unit=model.activation == "swiglu",
        activation_func=F.silu if model.activation == "swiglu" else F.gelu,
        add_bias_linear=model.add_bias_linear, add_qkv_bias=model.add_qkv_bias,
        init_method_std=model.init_method_std,
        hidden_dropout=model.hidden_dropout, attention_dropout=model.attention_dropout,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        bf16=bf16, params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_cpu_initialization=not on_gpu, perform_initialization=True,
        variable_seq_lengths=True,   # micro-batches may differ in length (pipeline shape exchange)
        moe_token_dispatcher_type="alltoall",   # dense model; "allgather" refuses variable lengths
        gradient_accumulation_fusion=False, masked_softmax_fusion=fused,
        bias_activation_fusion=fused, bias_dropout_fusion=fused, apply_rope_fusion=fused,
        persist_layer_norm=fused, cross_entropy_loss_fusion=False,
        **({"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}
           if model.recompute == "full" else {}),
    )


def layer_spec(model: ModelConfig):
    """megatron's layer spec for `model` on the selected device (resolved_layer_spec)."""
    from megatron.core.models.gpt import gpt_layer_specs

    if resolved_layer_spec(model) == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec()
    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization=model.normalization)
    if model.core_attention == "sdpa":
        from nemo_repo.model.attention import SDPADotProductAttention

        spec = copy.deepcopy(spec)   # megatron may hand out a shared spec object
        spec.submodules.self_attention.submodules.core_attention = SDPADotProductAttention
    return spec
