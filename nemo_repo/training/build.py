"""Build the models, the aligner and the optimizer of one training run from plain config objects.

    layout = initialize_parallel(parallel, model, seed)        # torch.distributed + megatron groups
    data = PreferenceData(...)                                 # needs the DP rank; fixes annotators
    state = ReliabilityState(config, data.annotators)          # sized from the data, every mode
    stack = build_training(model, parallel, objective, robust, optim, reliability=state)
    for step in ...:
        metrics = stack.aligner.train_step(micro_batches, stack.optimizer, stack.scheduler)
    save_checkpoint(root, step, stack.model_chunks, stack.optimizer, state, common=...)

Pretrained weights: load them into `stack.model_chunks` (model/weights.load_model_weights)
and, in reference mode "model", into `stack.reference_chunks` too, before the first step.
"""

from dataclasses import dataclass

from nemo_repo.model.aligner import PreferenceAligner
from nemo_repo.model.parallel import ParallelConfig
from nemo_repo.model.policy import build_policy, build_reference
from nemo_repo.model.presets import ModelConfig
from nemo_repo.training.optim import OptimConfig, build_optimizer, build_scheduler


@dataclass
class TrainingStack:
    model_chunks: list             # policy chunks (mcore DDP); chunks[0].sharded_state_dict() for checkpoints
    reference_chunks: list | None  # frozen reference (reference mode "model"), else None
    aligner: PreferenceAligner
    optimizer: object              # megatron optimizer: step() -> (ok, grad_norm, num_zeros)
    scheduler: object              # OptimizerParamScheduler


def build_training(model: ModelConfig, parallel: ParallelConfig, objective, robust,
                   optim: OptimConfig, reliability=None, seed: int = 1234,
                   reference: str = "model") -> TrainingStack:
    """After `initialize_parallel(parallel, model, seed)`: build the policy
    (seeded, layout-invariant init, mcore DDP), the frozen reference when the objective needs one
    and `reference == "model"` ("precomputed": batches carry reference sums), the aligner, the
    megatron optimizer and the LR scheduler."""
    if reference not in ("model", "precomputed"):
        raise ValueError(f"reference must be 'model' or 'precomputed', got {reference!r}")
    if optim.use_distributed_optimizer != parallel.use_distributed_optimizer:
        raise ValueError("OptimConfig.use_distributed_optimizer must equal "
                         "ParallelConfig.use_distributed_optimizer (the DDP buffers depend on it)")
    chunks = build_policy(model, parallel, seed=seed)
    reference_chunks = None
    if objective.needs_reference and reference == "model":
        reference_chunks = build_reference(model, parallel, seed=seed)
    aligner = PreferenceAligner(chunks, model, objective, robust, reliability, reference_chunks)
    optimizer = build_optimizer(optim, chunks, bf16=model.dtype == "bf16")
    return TrainingStack(chunks, reference_chunks, aligner, optimizer,
                         build_scheduler(optim, optimizer))
