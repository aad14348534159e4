"""The policy (trainable GPTModel, one chunk per pipeline stage, wrapped in mcore DDP) and the
frozen reference policy (same architecture, forward-only: no grad, no optimizer state).

Initialisation is layout-invariant: every randomly initialised parameter is regenerated from a
generator seeded by (seed, global parameter name) as the full unsharded tensor, and this rank's
TP shard is cut from it the way megatron's CPU initialisation cuts it (partition_dim, stride).
So TP=1 and TP=2 x PP=2 x DP=2 start from identical weights, which megatron's own init does not
guarantee (with PP the RNG stream depends on which layers a stage builds). Rows of the padded
vocabulary are zero (their logits are masked anyway, see logprobs.py). Pretrained weights are
loaded afterwards (model/weights.load_model_weights) into both policy and reference.
"""

import re
import zlib

import torch

from nemo_repo.device import current_device
from nemo_repo.model.parallel import ParallelConfig
from nemo_repo.model.presets import ModelConfig, layer_spec, to_transformer_config

_OUTPUT_SCALED = ("self_attention.linear_proj.weight", "mlp.linear_fc2.weight")
_VOCAB_PARAMS = ("embedding.word_embeddings.weight", "output_layer.weight")


def _build_chunk(model: ModelConfig, parallel: ParallelConfig):
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    config = to_transformer_config(model, parallel)
    gpt = GPTModel(
        config=config, transformer_layer_spec=layer_spec(model),
        vocab_size=model.padded_vocab_size(parallel.tensor_model_parallel_size),
        max_sequence_length=model.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True, share_embeddings_and_output_weights=model.tie_embeddings,
        position_embedding_type=model.position_embedding_type, rotary_base=model.rotary_base,
    )
    return gpt.to(current_device())


def _wrap_half(chunk):
    """bf16 models run inside megatron's Float16Module (fp32 logits out of the last stage)."""
    from megatron.core.transformer.module import Float16Module

    return Float16Module(chunk.config, chunk) if chunk.config.bf16 else chunk


def _global_name(name: str, chunk) -> str:
    """Local parameter name -> layout-independent name (global layer number, tied output)."""
    match = re.match(r"(.*decoder\.layers\.)(\d+)(\..*)", name)
    if match:
        layer = chunk.decoder.layers[int(match.group(2))]
        return f"{match.group(1)}{layer.layer_number - 1}{match.group(3)}"
    if name.endswith("output_layer.weight") and chunk.share_embeddings_and_output_weights:
        return name.replace("output_layer.weight", "embedding.word_embeddings.weight")
    return name


def _shard(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This TP rank's shard of `full`, cut as megatron's _initialize_affine_weight_cpu cuts it."""
    from megatron.core import parallel_state

    if not getattr(param, "tensor_model_parallel", False):
        return full
    dim, stride = param.partition_dim, getattr(param, "partition_stride", 1)
    rank = parallel_state.get_tensor_model_parallel_rank()
    world = parallel_state.get_tensor_model_parallel_world_size()
    pieces = torch.split(full, param.shape[dim] // stride, dim=dim)
    return torch.cat(pieces[rank::world], dim=dim)


@torch.no_grad()
def layout_invariant_init(chunk, model: ModelConfig, seed: int) -> None:
    """Re-initialise every random (>= 2-D) parameter of `chunk` from (seed, global name)."""
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    output_std = model.init_method_std / (2.0 * model.num_layers) ** 0.5
    for name, param in chunk.named_parameters():
        if param.dim() < 2:
            continue   # norms and biases are constants (ones / zeros) in every layout
        global_name = _global_name(name, chunk)
        std = output_std if global_name.endswith(_OUTPUT_SCALED) else model.init_method_std
        shape = list(param.shape)
        if getattr(param, "tensor_model_parallel", False):
            shape[param.partition_dim] *= tp
        generator = torch.Generator(device=param.device)
        generator.manual_seed((seed * 1_000_003 + zlib.crc32(global_name.encode())) % 2**63)
        if global_name.endswith(_VOCAB_PARAMS):
            real = torch.randn((model.vocab_size, *shape[1:]), generator=generator,
                               device=param.device, dtype=torch.float32)
            full = torch.zeros(shape, device=param.device, dtype=torch.float32)
            full[:model.vocab_size] = real * std
        else:
            full = torch.randn(shape, generator=generator, device=param.device,
                               dtype=torch.float32) * std
        param.copy_(_shard(full, param).to(param.dtype))


def build_policy(model: ModelConfig, parallel: ParallelConfig, seed: int = 1234,
                 wrap_with_ddp: bool = True, layout_invariant: bool = True) -> list:
    """The trainable policy: [one GPTModel chunk for this pipeline stage], wrapped in mcore
    DistributedDataParallel (grads accumulate into param.main_grad; pair with training/optim.py).

    Requires initialize_parallel() first. The list form matches megatron's schedules and
    checkpointing (`chunks[0].sharded_state_dict()`)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed.finalize_model_grads import finalize_model_grads

    chunk = _build_chunk(model, parallel)
    if layout_invariant:
        layout_invariant_init(chunk, model, seed)
    chunk = _wrap_half(chunk)
    if not wrap_with_ddp:
        return [chunk]
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False,
        use_distributed_optimizer=parallel.use_distributed_optimizer)
    wrapped = DistributedDataParallel(config=chunk.config, ddp_config=ddp_config, module=chunk)
    config = chunk.config
    config.no_sync_func = wrapped.no_sync
    config.finalize_model_grads_func = finalize_model_grads
    return [wrapped]


def build_reference(model: ModelConfig, parallel: ParallelConfig, seed: int = 1234,
                    layout_invariant: bool = True) -> list:
    """The frozen reference policy: same architecture and (given the same seed) the same initial
    weights as build_policy; no grad, eval mode, never given to an optimizer."""
    chunk = _build_chunk(model, parallel)
    if layout_invariant:
        layout_invariant_init(chunk, model, seed)
    chunk = _wrap_half(chunk)
    freeze(chunk)
    return [chunk]


def freeze(chunk) -> None:
    chunk.eval()
    for param in chunk.parameters():
        param.requires_grad_(False)

