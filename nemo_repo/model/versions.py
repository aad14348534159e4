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


def _transformer_engine() -> str | None:
    for name in ("transformer-engine", "transformer_engine", "transformer-engine-torch"):
        version = installed(name)
        if version:
            return version
    return None


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
            "transformer-engine": _transformer_engine(), "apex": installed("apex")}


def main() -> int:
    versions = current()
    print("  ".join(f"{name} {version or '-'}" for name, version in versions.items()))
    problems = check(versions)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
