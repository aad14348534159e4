"""Canary for nemo_repo.model.compat: is each CPU patch still needed, and are they enough?

    python tests/model/canary_worker.py VARIANT [VARIANT ...]

A VARIANT is `all` (every patch), `none` (no patch) or `without:<patch>` (every patch but one).
Each variant runs in its own forked child (megatron keeps process-wide state), on the CPU, as a
world of one: a tiny_llama bf16 RE-DPO optimizer step through our own stack (megatron schedule,
Float16Module, mcore DDP, the distributed optimizer with gradient clipping) and a checkpoint save.
Prints one line per variant: `CANARY <variant> OK` or
`CANARY <variant> FAIL at <megatron file>:<function> <type>: <message>`.
"""

import os
import sys
import tempfile
import traceback

import torch  # noqa: F401  (imported before forking: children share the loaded modules)

from nemo_repo.model import compat, parallel
from nemo_repo.model.parallel import ParallelConfig, destroy_parallel, initialize_parallel
from nemo_repo.model.presets import get_preset
from nemo_repo.objectives import ObjectiveConfig, RobustConfig
from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState
from nemo_repo.training.build import build_training
from nemo_repo.training.checkpoint import save_checkpoint
from nemo_repo.training.optim import OptimConfig
from tests.model.batches import make_pairs, micro_batches


def workload() -> None:
    model = get_preset("tiny_llama", num_layers=2, dtype="bf16")
    layout = ParallelConfig(micro_batch_size=2, global_batch_size=4, use_distributed_optimizer=True)
    state = ReliabilityState(ReliabilityConfig(), AnnotatorIndex(["a", "b", "c"]))
    initialize_parallel(layout, model, seed=1, device="cpu")
    stack = build_training(model, layout, ObjectiveConfig(name="dpo"), RobustConfig(mode="re"),
                           OptimConfig(lr=1e-3, total_steps=2, clip_grad=1.0,
                                       use_distributed_optimizer=True),
                           reliability=state, seed=1)
    stack.runner.train_step(micro_batches(make_pairs(4, model.vocab_size), 2), stack.optimizer,
                            stack.scheduler)
    with tempfile.TemporaryDirectory() as root:
        save_checkpoint(root, 1, stack.model_chunks, stack.optimizer, state)
    destroy_parallel()


def run_variant(variant: str) -> None:
    if variant == "none":
        parallel.apply_cpu_compat = lambda *args, **kwargs: False   # initialize_parallel's call
    else:
        compat.apply_cpu_compat(exclude=() if variant == "all" else (variant.split(":", 1)[1],))
    workload()


def _megatron_frame(error) -> str:
    """The innermost megatron source line of the traceback (path under megatron/core/)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/megatron/core/" in f.filename]
    if not frames:
        return "(not in megatron)"
    return f"{frames[-1].filename.split('/megatron/core/', 1)[1]}:{frames[-1].name}"


def main(variants) -> None:
    for variant in variants:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:   # child: run, report one line through the pipe, exit
            os.close(read)
            try:
                run_variant(variant)
                line = "OK"
            except Exception as error:  # the canary reports whatever megatron raises, and where
                traceback.print_exc()
                line = f"FAIL at {_megatron_frame(error)} {type(error).__name__}: " \
                       f"{(str(error).splitlines() or [''])[0]}"
            os.write(write, line.encode())
            os.close(write)
            sys.exit(0)   # not os._exit: the exit handlers stop dist_checkpointing's Manager process
        os.close(write)
        with os.fdopen(read) as pipe:
            line = pipe.read()
        os.waitpid(pid, 0)
        print(f"CANARY {variant} {line or 'FAIL child died without a report'}", flush=True)


if __name__ == "__main__":   # dist_checkpointing starts a spawn Manager: keep work behind this guard
    main(sys.argv[1:])
