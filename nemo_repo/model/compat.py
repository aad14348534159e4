"""Run megatron-core 0.16.1 on the CPU (gloo), for tests, CI and laptops; removable, and scoped.

megatron-core assumes CUDA in a handful of places (measured one patch at a time; the canary,
tests/model/test_compat.py, re-measures them on every test run). Each patch below is named, changes behaviour ONLY for
calls made from megatron's own modules (the caller's module name starts with "megatron."; every
other caller, this package and its tests included, gets the original torch function), and is
undone by `remove_cpu_compat()`. model.parallel.initialize_parallel applies them when the run's
device (nemo_repo.device) is the CPU; on CUDA nothing is patched.

| patch           | what megatron does on CPU without it                 | the patch, for megatron callers |
|-----------------|------------------------------------------------------|---------------------------------|
| rng             | its RNG tracker saves / forks CUDA generator states  | torch.cuda.{get,set}_rng_state, |
|                 | (tensor_parallel/random.py; even at dropout 0)       | manual_seed and random._{get,set}|
|                 |                                                      | _cuda_rng_state use the CPU RNG |
| current_device  | torch.cuda.current_device() as a device (attention   | returns torch.device("cpu")     |
|                 | buffers, RoPE, param_and_grad_buffer)                |                                 |
| cuda_factories  | device="cuda" in factory calls (schedules.py,        | a CUDA device becomes the CPU   |
|                 | optimizer.py, clip_grads.py)                         |                                 |
| synchronize     | torch.cuda.synchronize() (p2p, checkpoint writer)    | no-op                           |
| tensor_cuda     | Tensor.cuda() (distributed optimizer state gather)   | identity                        |
| tensor_type     | compares Tensor.type() with 'torch.cuda.FloatTensor' | the CUDA type name of the CPU   |
|                 | (clip_grads.py, distributed optimizer, Float16Module)|   tensor                        |

Factory functions are wrapped, not redirected by a TorchFunctionMode: a mode does not reach
allocations made inside custom autograd backward functions. Not patched (use the alternatives):
the default causal mask (pass an explicit boolean attention mask, as PreferenceBatch does), TE /
apex / fused kernels, sequence parallel.

Written for megatron-core SUPPORTED_MEGATRON_CORE; another version gets a warning, and the canary
(tests/model/test_compat.py) checks on every test run that each patch is still needed and that
all of them together are enough.
"""

import functools
import importlib
import sys
import warnings
from dataclasses import dataclass, field

import torch

SUPPORTED_MEGATRON_CORE = "0.16.1"
_CPU = torch.device("cpu")
# Factory functions megatron calls with device="cuda" or device=torch.cuda.current_device().
_FACTORIES = ("empty", "zeros", "ones", "full", "tensor", "arange", "rand", "randn", "randint",
              "randperm", "empty_strided", "linspace", "as_tensor", "zeros_like", "ones_like",
              "empty_like", "full_like")


def _from_megatron(depth: int = 2) -> bool:
    """True when the function `depth` frames up (the patched function's caller) is megatron code."""
    return sys._getframe(depth).f_globals.get("__name__", "").startswith("megatron.")


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)   # a bare ordinal is a GPU


def _for_megatron(original, replacement):
    """`replacement` for callers in megatron, `original` for everybody else."""
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if _from_megatron():
            return replacement(*args, **kwargs)
        return original(*args, **kwargs)
    return wrapper


def _redirect_device(original):
    """A factory function whose device="cuda" becomes the CPU for megatron's calls (the cheap
    device test first: most calls pass no CUDA device)."""
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if _is_cuda(kwargs.get("device")) and _from_megatron():
            kwargs["device"] = _CPU
        return original(*args, **kwargs)
    return wrapper


def _tensor_type(original):
    def replacement(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not args and not kwargs and result.startswith("torch.") \
                and not result.startswith("torch.cuda."):
            return "torch.cuda." + result[len("torch."):]
        return result
    return _for_megatron(original, replacement)


@dataclass
class Patch:
    """One named patch: (owner object, attribute) -> factory(original) -> replacement."""
    name: str
    targets: list = field(default_factory=list)   # [(owner, attribute, make_replacement)]
    saved: list = field(default_factory=list)     # [(owner, attribute, original)] while applied

    def apply(self) -> None:
        for owner, attribute, make in self.targets:
            original = getattr(owner, attribute)
            self.saved.append((owner, attribute, original))
            setattr(owner, attribute, make(original))

    def remove(self) -> None:
        for owner, attribute, original in reversed(self.saved):
            setattr(owner, attribute, original)
        self.saved.clear()


def _patches() -> list[Patch]:
    random = importlib.import_module("megatron.core.tensor_parallel.random")

    def cpu_get_state(original):
        return _for_megatron(original, lambda *args, **kwargs: torch.get_rng_state())

    def cpu_set_state(original):
        return _for_megatron(original, lambda new_state, *args, **kwargs: torch.set_rng_state(new_state))

    return [
        Patch("rng", [(torch.cuda, "get_rng_state", cpu_get_state),
                      (torch.cuda, "set_rng_state", cpu_set_state),
                      (torch.cuda, "manual_seed",
                       lambda original: _for_megatron(original, torch.manual_seed)),
                      # megatron's own helpers: replaced outright (they only exist for megatron)
                      (random, "_get_cuda_rng_state",
                       lambda original: lambda *args, **kwargs: torch.get_rng_state()),
                      (random, "_set_cuda_rng_state",
                       lambda original: lambda new_state, *args, **kwargs: torch.set_rng_state(new_state))]),
        Patch("current_device", [(torch.cuda, "current_device",
                                  lambda original: _for_megatron(original, lambda: _CPU))]),
        Patch("cuda_factories", [(torch, name, _redirect_device) for name in _FACTORIES]),
        Patch("synchronize", [(torch.cuda, "synchronize",
                               lambda original: _for_megatron(original, lambda *args, **kwargs: None))]),
        Patch("tensor_cuda", [(torch.Tensor, "cuda",
                               lambda original: _for_megatron(original, lambda self, *a, **k: self))]),
        Patch("tensor_type", [(torch.Tensor, "type", _tensor_type)]),
    ]


PATCH_NAMES = ("rng", "current_device", "cuda_factories", "synchronize", "tensor_cuda", "tensor_type")
_applied: list[Patch] = []


def check_megatron_version() -> str:
    """The installed megatron-core version; warns when it is not the one these patches were
    measured on (run tests/model/test_compat.py: it says which patches are still needed)."""
    from megatron.core.package_info import __version__

    if __version__ != SUPPORTED_MEGATRON_CORE:
        warnings.warn(f"nemo_repo.model.compat was written for megatron-core {SUPPORTED_MEGATRON_CORE}, "
                      f"found {__version__}: the CPU patches may be incomplete or unneeded; run "
                      f"tests/model/test_compat.py", RuntimeWarning, stacklevel=2)
    return __version__


def apply_cpu_compat(exclude=()) -> bool:
    """Apply every patch (except those named in `exclude`, for the canary). Idempotent: returns
    True when patches are in place (now or already)."""
    if _applied:
        return True
    unknown = set(exclude) - set(PATCH_NAMES)
    if unknown:
        raise ValueError(f"unknown compat patch(es) {sorted(unknown)}; known: {PATCH_NAMES}")
    check_megatron_version()
    for patch in _patches():
        if patch.name not in exclude:
            patch.apply()
            _applied.append(patch)
    return True


def remove_cpu_compat() -> None:
    """Undo every applied patch (the originals are restored exactly)."""
    while _applied:
        _applied.pop().remove()


def is_applied() -> bool:
    return bool(_applied)
