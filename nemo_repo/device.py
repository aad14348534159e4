"""Where tensors live (`run.device`), decided once per process, and collectives that respect it.

Layer 0 (pure torch, imports nothing from the package): reliability, model, convert and training
all ask it, and nothing else in the package calls `torch.cuda.is_available()`.

    select("auto" | "cpu" | "cuda")   once, at start-up (model.parallel.initialize_parallel)
    current_device(), is_cuda()       where models, batches and step-local tensors go
    process_group_backend()           "nccl" on CUDA, "gloo" on CPU

`auto` is CUDA when torch sees a GPU, else CPU; `cuda` without a GPU is a DeviceError; `cpu`
hides the GPUs from this process (CUDA_VISIBLE_DEVICES="" before CUDA starts), so megatron takes
the same code path as on a CPU-only machine. On CUDA the device is this process's LOCAL_RANK GPU.

Collectives: NCCL only reduces CUDA tensors and gloo here only CPU ones. `all_reduce` and
`broadcast` move the tensor to the device the group's backend needs (`collective_device`),
run the collective and copy the result back into the caller's tensor, so callers keep their
tensors where they are (reliability keeps its int64 sums on the CPU). Object collectives
(`all_gather_object`, `broadcast_object_list`) and `barrier` pick their device themselves.
"""

import os

import torch
import torch.distributed as dist

DEVICES = ("auto", "cpu", "cuda")
_CPU = torch.device("cpu")
_selected: torch.device | None = None


class DeviceError(ValueError):
    """A device request this machine cannot satisfy (e.g. run.device=cuda without a GPU)."""


def resolve(requested: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device `requested` means on this machine, for the process with `local_rank`
    (default: $LOCAL_RANK, else 0). Does not change anything."""
    if requested not in DEVICES:
        raise DeviceError(f"run.device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return _CPU
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise DeviceError(f"run.device=cuda but torch {torch.__version__} sees no GPU "
                              f"(built for CUDA {torch.version.cuda}); use run.device=auto or cpu")
        return _CPU
    rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    return torch.device("cuda", rank % torch.cuda.device_count())


def select(requested: str = "auto") -> torch.device:
    """Fix this process's device (idempotent for the same answer) and return it."""
    global _selected
    if requested == "cpu" and not torch.cuda.is_initialized():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""   # megatron then sees a CPU-only torch
    device = resolve(requested)
    if _selected is not None and _selected != device:
        raise DeviceError(f"this process already runs on {_selected}; cannot switch to {device}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _selected = device
    return device


def current_device() -> torch.device:
    """The selected device; before `select`, what "auto" resolves to."""
    return _selected if _selected is not None else resolve("auto")


def is_cuda() -> bool:
    return current_device().type == "cuda"


def process_group_backend() -> str:
    return "nccl" if is_cuda() else "gloo"


def collective_device(tensor: torch.Tensor, group=None) -> torch.device:
    """Where `tensor` must be for a collective over `group`: the current CUDA device for NCCL,
    the CPU for gloo / MPI, its own device for a mixed backend ("cpu:gloo,cuda:nccl")."""
    backend = str(dist.get_backend(group))
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if "nccl" in backend and "gloo" in backend:
        return tensor.device
    return _CPU


def _run(collective, tensor: torch.Tensor, group, **kwargs) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return tensor                                   # a world of one: nothing to exchange
    work = tensor.to(collective_device(tensor, group))
    collective(work, group=group, **kwargs)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def all_reduce(tensor: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> torch.Tensor:
    """In place over `group` (default: the world), whatever device `tensor` is on; returns it."""
    return _run(dist.all_reduce, tensor, group, op=op)


def broadcast(tensor: torch.Tensor, src: int, group=None) -> torch.Tensor:
    """In place from global rank `src` over `group`, whatever device `tensor` is on; returns it."""
    return _run(dist.broadcast, tensor, group, src=src)
