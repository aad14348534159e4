"""Make megatron-core 0.16.1 run on CPU-only torch (gloo), for tests, CI and laptops.

megatron-core assumes CUDA in a handful of places (measured one patch at a time, see
/work/shared/notes/megatron-on-cpu.md). `apply_cpu_compat()` patches exactly those, in process,
and only when `torch.cuda.is_available()` is False; on a GPU machine it does nothing.

| assumption                                   | patch                                             |
|----------------------------------------------|---------------------------------------------------|
| RNG tracker stores CUDA generator states      | torch.cuda.{get,set}_rng_state / manual_seed and  |
|   (tensor_parallel/random.py)                 |   random._{get,set}_cuda_rng_state use the CPU RNG|
| torch.cuda.current_device() used as a device  | returns torch.device("cpu")                       |
| literal device="cuda" in factory calls        | torch factory functions map a CUDA device to cpu  |
|   (schedules.py, optimizer.py, clip_grads.py) |   (a TorchFunctionMode would miss allocations made |
|                                               |   inside custom autograd backward functions)      |
| Tensor.cuda() / torch.cuda.synchronize()      | identity / no-op                                  |
| Tensor.type() compared to 'torch.cuda.*Tensor'| for callers inside megatron only, report the CUDA |
|   (clip_grads.py, (distrib_)optimizer.py)     |   type name of the CPU tensor                     |

Not patched (use the alternatives): the default causal mask (transformer/utils.py hard-codes
cuda: pass an explicit boolean attention mask, as PreferenceBatch does), TE / apex / fused kernels,
sequence parallel. The canary test tests/model/test_compat.py runs a tiny forward without these
patches and expects today's failure, so an upgrade that changes what needs patching is noticed.
"""

import functools
import sys

import torch

_APPLIED = False
_CPU = torch.device("cpu")

# Factory functions megatron calls with device="cuda" or device=torch.cuda.current_device().
_FACTORIES = ("empty", "zeros", "ones", "full", "tensor", "arange", "rand", "randn", "randint",
              "randperm", "empty_strided", "linspace", "as_tensor", "zeros_like", "ones_like",
              "empty_like", "full_like")


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int)   # a bare ordinal means a CUDA device


def _redirect_device(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = _CPU
        return function(*args, **kwargs)
    wrapper.__nemo_repo_cpu_compat__ = True
    return wrapper


def _tensor_to(original):
    @functools.wraps(original)
    def to(self, *args, **kwargs):
        if args and _is_cuda(args[0]) and not isinstance(args[0], torch.dtype):
            args = (_CPU, *args[1:])
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = _CPU
        return original(self, *args, **kwargs)
    return to


def _tensor_type(original):
    """Tensor.type(): megatron compares the no-argument result with 'torch.cuda.FloatTensor'."""
    @functools.wraps(original)
    def type_(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not args and not kwargs and isinstance(result, str) and result.startswith("torch.") \
                and not result.startswith("torch.cuda."):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("megatron."):
                return "torch.cuda." + result[len("torch."):]
        return result
    return type_


def _patch_rng() -> None:
    from megatron.core.tensor_parallel import random as mcore_random

    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    torch.cuda.manual_seed = lambda seed: torch.manual_seed(seed)
    mcore_random._get_cuda_rng_state = (
        lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state())
    mcore_random._set_cuda_rng_state = (
        lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state))


def apply_cpu_compat() -> bool:
    """Patch megatron-core's CUDA assumptions when CUDA is absent. Idempotent.

    Call it before any megatron model, optimizer or schedule is built (parallel.initialize_parallel
    does). Returns True when the patches are (or already were) in place, False on a CUDA machine.
    """
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if _APPLIED:
        return True
    for name in _FACTORIES:
        setattr(torch, name, _redirect_device(getattr(torch, name)))
    torch.Tensor.to = _tensor_to(torch.Tensor.to)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.type = _tensor_type(torch.Tensor.type)
    torch.cuda.current_device = lambda: _CPU
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.set_device = lambda device: None
    _patch_rng()
    _APPLIED = True
    return True


def is_applied() -> bool:
    return _APPLIED
