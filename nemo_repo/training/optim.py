"""Megatron-core optimizer (Adam, decoupled weight decay, global grad-norm clipping) for mcore-DDP
model chunks, and the LR schedule (linear warmup, cosine decay to min_lr).

mcore DDP accumulates gradients into `param.main_grad`, which only megatron's optimizer reads:
always pair build_policy(wrap_with_ddp=True) with build_optimizer. The distributed optimizer
(ZeRO-1: optimizer state sharded over DP) is `OptimConfig.use_distributed_optimizer`; it must
match the policy's DDP config (ParallelConfig.use_distributed_optimizer), and its checkpoints are
not interchangeable with the regular optimizer's.
"""

from dataclasses import dataclass

import torch

from nemo_repo.device import is_cuda


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-7
    min_lr: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0              # max global grad norm (0 = no clipping)
    warmup_steps: int = 0
    total_steps: int = 1                # optimizer steps of the run (end of the cosine decay)
    decay_style: str = "cosine"         # cosine | linear | constant
    use_distributed_optimizer: bool = False

    def __post_init__(self):
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"OptimConfig.lr/min_lr: need 0 <= min_lr <= lr and lr > 0, "
                             f"got lr={self.lr}, min_lr={self.min_lr}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps < max(self.total_steps, 1) + 1:
            raise ValueError(f"OptimConfig.warmup_steps={self.warmup_steps} must lie in "
                             f"[0, total_steps={self.total_steps}]")
        if self.decay_style not in ("cosine", "linear", "constant"):
            raise ValueError(f"OptimConfig.decay_style must be cosine, linear or constant, "
                             f"got {self.decay_style!r}")
        if self.clip_grad < 0:
            raise ValueError(f"OptimConfig.clip_grad must be >= 0, got {self.clip_grad}")


def build_optimizer(optim: OptimConfig, model_chunks, bf16: bool = False):
    """megatron's get_megatron_optimizer over `model_chunks` (mcore DDP). optimizer.step()
    returns (update_successful, grad_norm, num_zeros_in_grad); grad_norm is the global pre-clip
    norm over all TP / PP / DP ranks."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config = OptimizerConfig(
        optimizer="adam", lr=optim.lr, min_lr=optim.min_lr, weight_decay=optim.weight_decay,
        adam_beta1=optim.adam_beta1, adam_beta2=optim.adam_beta2, adam_eps=optim.adam_eps,
        clip_grad=optim.clip_grad, bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=optim.use_distributed_optimizer)
    return get_megatron_optimizer(config, list(model_chunks),
                                  use_gloo_process_groups=is_cuda())


def build_scheduler(optim: OptimConfig, optimizer):
    """megatron's OptimizerParamScheduler: linear warmup over warmup_steps from 0 to lr, then
    `decay_style` down to min_lr at total_steps. Call scheduler.step(1) after each optimizer step;
    state_dict() / load_state_dict() for checkpoints."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=optim.lr, min_lr=optim.min_lr,
        lr_warmup_steps=optim.warmup_steps,
        lr_decay_steps=max(optim.total_steps, optim.warmup_steps + 1),
        lr_decay_style=optim.decay_style, start_wd=optim.weight_decay, end_wd=optim.weight_decay,
        wd_incr_steps=max(optim.total_steps, 1), wd_incr_style="constant")
