"""The model-weights format: a dist_checkpointing directory holding {"model": GPTModel.sharded_state_dict()}.

Written by `recipes.convert import` (a converted HF model) and read by training (`model.init_from`),
the reference precompute and `recipes.convert export`; a training checkpoint (training/checkpoint.py)
stores the same "model" entry, so either loads here in any TP/PP layout. Keys are those of the bare
GPTModel (`single_chunk` unwraps DDP / Float16Module), so policy, reference and converted
checkpoints share one key format.
"""

import queue
from pathlib import Path

from megatron.core import dist_checkpointing
from megatron.core.utils import unwrap_model

from nemo_repo.model.versions import require_private
from nemo_repo.ranks import barrier, on_rank_zero


def single_chunk(model_chunks):
    """The one GPTModel of this rank, unwrapped from DDP / Float16Module (wrappers would prefix
    every key with "module.")."""
    chunks = list(model_chunks) if isinstance(model_chunks, (list, tuple)) else [model_chunks]
    if len(chunks) != 1:
        raise ValueError(f"checkpointing supports one model chunk per rank (no virtual pipeline), "
                         f"got {len(chunks)}")
    return unwrap_model(chunks[0])


def save_sharded(state: dict, directory) -> None:
    """dist_checkpointing.save (synchronous) with its write results passed in process.

    The torch_dist writer forks one writer process per file, collects their results in this
    process and hands them over through a results queue, by default a spawned multiprocessing
    Manager. Only needed for asynchronous saves (not used here), that Manager is a separate
    process which receives the stop signals too (srun and torchrun signal the worker's whole
    process group) and dies of them, so the save that follows a SIGTERM failed with
    BrokenPipeError / ConnectionRefusedError. A plain queue.Queue removes it: no extra
    process, no 2.5-4 s spawn on the first save, no re-import of `__main__`."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    require_private(filesystem_async, "_results_queue", "megatron-core")
    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = queue.Queue()
    dist_checkpointing.save(state, str(directory))


def load_model_weights(directory, model_chunks) -> None:
    """Collective: load only the "model" entry of a dist_checkpointing directory (a training
    checkpoint or a converted HF model) into `model_chunks`, in any TP/PP layout."""
    model = single_chunk(model_chunks)
    loaded = dist_checkpointing.load({"model": model.sharded_state_dict()},
                                     str(Path(directory).expanduser()))
    model.load_state_dict(loaded["model"])


def save_model_weights(directory, model_chunks) -> None:
    """Collective: write only {"model": sharded_state_dict()} (the model-weights format)."""
    directory = Path(directory)
    on_rank_zero(directory.mkdir, parents=True, exist_ok=True)
    save_sharded({"model": single_chunk(model_chunks).sharded_state_dict()}, directory)
    barrier()
