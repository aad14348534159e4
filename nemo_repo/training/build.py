"""Build the models, the step runner and the optimizer of one training run from plain config objects.

    layout = initialize_parallel(parallel, model, seed)        # torch.distributed + megatron groups
    data = PreferenceData(...)                                 # needs the DP rank; fixes annotators
    state = ReliabilityState(config, data.annotators)          # sized from the data, every mode
    stack = build_training(model, parallel, objective, robust, optim, reliability=state)
    for step in ...:
        result = stack.runner.train_step(micro_batches, stack.optimizer, stack.scheduler)
    save_checkpoint(root, step, stack.model_chunks, stack.optimizer, state, common=...)

Pretrained weights: load them into `stack.model_chunks` (model/weights.load_model_weights)
and, in reference mode MODEL, into `stack.reference_chunks` too, before the first step.
"""

from dataclasses import dataclass

from nemo_repo.model.parallel import ParallelConfig
from nemo_repo.model.policy import build_policy, build_reference
from nemo_repo.model.preference import PreferenceModel
from nemo_repo.model.presets import ModelConfig
from nemo_repo.objectives import ReferenceMode, resolve_reference_mode
from nemo_repo.training.optim import OptimConfig, build_optimizer, build_scheduler
from nemo_repo.training.step import StepRunner


@dataclass
class TrainingStack:
    model_chunks: list             # policy chunks (mcore DDP); chunks[0].sharded_state_dict() for checkpoints
    reference_chunks: list | None  # frozen reference (ReferenceMode.MODEL), else None
    runner: StepRunner
    optimizer: object              # megatron optimizer: step() -> (ok, grad_norm, num_zeros)
    scheduler: object              # OptimizerParamScheduler


def build_training(model: ModelConfig, parallel: ParallelConfig, objective, robust,
                   optim: OptimConfig, reliability=None, seed: int = 1234,
                   reference: ReferenceMode | None = None) -> TrainingStack:
    """After `initialize_parallel(parallel, model, seed)`: build the policy (seeded,
    layout-invariant init, mcore DDP), the frozen reference in reference mode MODEL, the step
    runner, the megatron optimizer and the LR scheduler. `reference`: the run's resolved mode
    (Settings.reference); None resolves the default, resolve_reference_mode(objective)."""
    reference = resolve_reference_mode(objective) if reference is None else ReferenceMode(reference)
    if optim.use_distributed_optimizer != parallel.use_distributed_optimizer:
        raise ValueError("OptimConfig.use_distributed_optimizer must equal "
                         "ParallelConfig.use_distributed_optimizer (the DDP buffers depend on it)")
    chunks = build_policy(model, parallel, seed=seed)
    reference_chunks = build_reference(model, parallel, seed=seed) \
        if reference is ReferenceMode.MODEL else None
    runner = StepRunner(PreferenceModel(chunks, model, objective, robust), reference, reliability,
                        reference_chunks)
    optimizer = build_optimizer(optim, chunks, bf16=model.dtype == "bf16")
    return TrainingStack(chunks, reference_chunks, runner, optimizer, build_scheduler(optim, optimizer))
