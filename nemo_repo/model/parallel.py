"""Parallel layout (TP x PP x DP), its validation, and torch.distributed / megatron initialisation.

Layout: world_size = TP * PP * DP. Batches are counted in preference PAIRS: a micro-batch holds
`micro_batch_size` pairs per data-parallel rank and an optimizer step consumes
`global_batch_size` pairs = micro_batch_size * DP * num_microbatches.

`validate_layout` checks every divisibility constraint up front and raises `LayoutError` with a
message naming the offending sizes, before any process group, model or buffer exists.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from nemo_repo.device import is_cuda, process_group_backend, select
from nemo_repo.model.compat import apply_cpu_compat
from nemo_repo.ranks import free_port


class LayoutError(ValueError):
    """An impossible TP / PP / DP / batch layout."""


@dataclass(frozen=True)
class ParallelConfig:
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    micro_batch_size: int = 1          # pairs per micro-batch per data-parallel rank
    global_batch_size: int = 1         # pairs per optimizer step, over all DP ranks
    use_distributed_optimizer: bool = False
    timeout_minutes: float = 10.0      # collective timeout: a hung rank fails instead of waiting forever

    def __post_init__(self):
        for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size",
                     "micro_batch_size", "global_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LayoutError(f"ParallelConfig.{name} must be a positive integer, got {value!r}")
        if self.timeout_minutes <= 0:
            raise LayoutError(f"ParallelConfig.timeout_minutes must be > 0, got {self.timeout_minutes}")

    def data_parallel_size(self, world_size: int) -> int:
        return world_size // (self.tensor_model_parallel_size * self.pipeline_model_parallel_size)

    def num_microbatches(self, world_size: int) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.data_parallel_size(world_size))


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_parallel: int) -> int:
    """Megatron's padding: round the vocabulary up to a multiple of divisible_by * TP."""
    multiple = divisible_by * tensor_parallel
    return -(-vocab_size // multiple) * multiple


def validate_layout(parallel: ParallelConfig, model, world_size: int) -> None:
    """Raise LayoutError if `parallel` cannot run `model` (a presets.ModelConfig) on `world_size`."""
    tp, pp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size
    errors = []
    if world_size % (tp * pp):
        errors.append(f"world size {world_size} is not divisible by TP*PP = {tp}*{pp} = {tp * pp}")
    if model.num_attention_heads % tp:
        errors.append(f"TP={tp} does not divide num_attention_heads={model.num_attention_heads}")
    groups = model.num_query_groups or model.num_attention_heads
    if groups % tp:
        errors.append(f"TP={tp} does not divide num_query_groups (KV heads)={groups}")
    if model.ffn_hidden_size % tp:
        errors.append(f"TP={tp} does not divide ffn_hidden_size={model.ffn_hidden_size}")
    padded = padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by, tp)
    if padded % tp:
        errors.append(f"TP={tp} does not divide the padded vocabulary size {padded}")
    if model.num_layers % pp:
        errors.append(f"PP={pp} does not divide num_layers={model.num_layers}")
    if not errors:
        dp = parallel.data_parallel_size(world_size)
        per_step = parallel.micro_batch_size * dp
        if parallel.global_batch_size % per_step:
            errors.append(f"micro_batch_size*DP = {parallel.micro_batch_size}*{dp} = {per_step} does "
                          f"not divide global_batch_size={parallel.global_batch_size}")
    if errors:
        raise LayoutError(f"impossible parallel layout (TP={tp}, PP={pp}, world size {world_size}, "
                          f"model {getattr(model, 'name', '?')}): " + "; ".join(errors))


def _world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _single_process_env() -> None:
    """Let a plain `python script.py` run as a world of one (tests, benchmarks, notebooks)."""
    if "WORLD_SIZE" in os.environ:
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1")


def initialize_parallel(parallel: ParallelConfig, model, seed: int = 1234,
                        device: str = "auto") -> dict:
    """Validate, select the device (`run.device`: auto | cpu | cuda, see nemo_repo.device), then
    initialise torch.distributed (nccl on CUDA, gloo on CPU, where megatron-core also gets its CPU
    compatibility patches) and megatron's parallel_state and RNG tracker.
    Returns {"tp", "pp", "dp", "num_microbatches", "world_size"}.

    Safe to call when torch.distributed is already initialised (the existing group is used)."""
    world_size = dist.get_world_size() if dist.is_initialized() else _world_size_from_env()
    validate_layout(parallel, model, world_size)
    select(device)
    if not is_cuda():
        apply_cpu_compat()
    from megatron.core import parallel_state, tensor_parallel

    if not dist.is_initialized():
        _single_process_env()
        dist.init_process_group(backend=process_group_backend(),
                                timeout=timedelta(minutes=parallel.timeout_minutes))
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        distributed_timeout_minutes=max(1, int(parallel.timeout_minutes)),
        create_gloo_process_groups=is_cuda(),   # megatron's CPU-side groups, next to NCCL
    )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return {"tp": parallel.tensor_model_parallel_size, "pp": parallel.pipeline_model_parallel_size,
            "dp": parallel_state.get_data_parallel_world_size(),
            "num_microbatches": parallel.num_microbatches(world_size), "world_size": world_size}


def destroy_parallel() -> None:
    """Tear down megatron's groups and the default process group (end of a script or test)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
