"""Is this Python environment's megatron stack one our pins work with? (`python -m nemo_repo.model.versions`)

Used by the Dockerfile (an NGC PyTorch image plus our pinned extras) and `make gpu-setup`: it prints
the versions and exits 1, naming the package, when one is outside what our pins declare:

    python            >= 3.10 (megatron-core 0.16.1, megatron-bridge 0.3.1); CPU CI runs 3.11
    torch             >= 2.6 (both); the CPU install pins 2.13.0, a container keeps its own build
    megatron-core     == 0.16.1 (requirements.txt; model/compat.py was measured on it)
    megatron-bridge   == 0.3.1 (requirements-nodeps.txt)
    transformer-engine, when present: >= 2.10 (bridge 0.3.1) and < 2.12 (megatron-core 0.16.1's
                      dev extra); outside it, use model.layer_spec=local or another image
"""

import functools
import sys
from importlib import metadata

from packaging.version import Version

from nemo_repo.model.compat import SUPPORTED_MEGATRON_CORE

MEGATRON_BRIDGE = "0.3.1"
TORCH_MIN = Version("2.6")
TRANSFORMER_ENGINE_RANGE = (Version("2.10"), Version("2.12"))


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def transformer_engine_version() -> str | None:
    """The installed Transformer Engine distribution's version (None: not installed)."""
    for name in ("transformer-engine", "transformer_engine", "transformer-engine-torch"):
        version = installed(name)
        if version:
            return version
    return None


@functools.cache
def have_transformer_engine() -> bool:
    """Whether transformer_engine.pytorch imports here (installed AND built for this torch / CUDA)."""
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:   # absent, or built for another torch / CUDA
        return False
    return True


PINNED = {"megatron-core": SUPPORTED_MEGATRON_CORE, "megatron-bridge": MEGATRON_BRIDGE}
# The private (underscore) names of the pinned packages we rely on: (module, attribute path,
# package). `require_private` guards each use; tests/model/test_versions.py checks all of them.
PRIVATE_APIS = (
    ("megatron.core.dist_checkpointing.strategies.filesystem_async", "_results_queue",
     "megatron-core"),   # model/weights.py: the write-results queue, in process
    ("megatron.bridge.models.conversion.model_bridge",
     "MegatronModelBridge._megatron_global_param_names_all_pp_ranks",
     "megatron-bridge"),   # convert/bridge.py: the coverage check
)


def require_private(owner, name: str, package: str):
    """`owner.name`, a private API of `package`; a clear error naming it and the versions when the
    installed release no longer has it."""
    if not hasattr(owner, name):
        raise RuntimeError(f"{getattr(owner, '__name__', owner)}.{name}, a private {package} API "
                           f"nemo_repo relies on, is missing in {package} {installed(package)}; "
                           f"nemo_repo is written for {package} {PINNED[package]}")
    return getattr(owner, name)


def check(versions: dict) -> list[str]:
    """Problems with `versions` ({"python", "torch", "megatron-core", "megatron-bridge",
    "transformer-engine"}: version strings or None), as messages; [] when consistent."""
    problems = []
    if Version(versions["python"]) < Version("3.10"):
        problems.append(f"python {versions['python']} < 3.10")
    torch = versions["torch"]
    if torch is None or Version(Version(torch).base_version) < TORCH_MIN:
        problems.append(f"torch {torch} (need >= {TORCH_MIN})")
    if versions["megatron-core"] != SUPPORTED_MEGATRON_CORE:
        problems.append(f"megatron-core {versions['megatron-core']} (need {SUPPORTED_MEGATRON_CORE})")
    if versions["megatron-bridge"] != MEGATRON_BRIDGE:
        problems.append(f"megatron-bridge {versions['megatron-bridge']} (need {MEGATRON_BRIDGE})")
    te = versions["transformer-engine"]
    low, high = TRANSFORMER_ENGINE_RANGE
    if te is not None and not low <= Version(Version(te).base_version) < high:
        problems.append(f"transformer-engine {te} (megatron-core {SUPPORTED_MEGATRON_CORE} and "
                        f"megatron-bridge {MEGATRON_BRIDGE} need >= {low}, < {high})")
    return problems


def current() -> dict:
    return {"python": ".".join(map(str, sys.version_info[:3])), "torch": installed("torch"),
            "megatron-core": installed("megatron-core"), "megatron-bridge": installed("megatron-bridge"),
            "transformer-engine": transformer_engine_version(), "apex": installed("apex")}


def main() -> int:
    versions = current()
    print("  ".join(f"{name} {version or '-'}" for name, version in versions.items()))
    problems = check(versions)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
