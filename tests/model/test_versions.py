"""nemo_repo.model.versions: the pin-consistency check the GPU image build and make gpu-setup run."""

import importlib
from types import SimpleNamespace

import pytest

from nemo_repo.model.versions import PRIVATE_APIS, check, current, require_private

GOOD = {"python": "3.12.3", "torch": "2.9.0a0+50eac811a6.nv25.10", "megatron-core": "0.16.1",
        "megatron-bridge": "0.3.1", "transformer-engine": "2.10.0+769ed778"}


def test_an_ngc_style_stack_that_fits_our_pins():
    assert check(GOOD) == []
    assert check({**GOOD, "transformer-engine": None}) == []      # no TE: the local spec is used


@pytest.mark.parametrize("name, version, message", [
    ("transformer-engine", "2.12.0", "transformer-engine 2.12.0 (megatron-core 0.16.1 and "
                                     "megatron-bridge 0.3.1 need >= 2.10, < 2.12)"),
    ("transformer-engine", "2.9.1", "transformer-engine 2.9.1 (megatron-core 0.16.1 and "
                                    "megatron-bridge 0.3.1 need >= 2.10, < 2.12)"),
    ("megatron-core", "0.17.0", "megatron-core 0.17.0 (need 0.16.1)"),
    ("megatron-bridge", None, "megatron-bridge None (need 0.3.1)"),
    ("torch", "2.5.1", "torch 2.5.1 (need >= 2.6)"),
    ("python", "3.9.18", "python 3.9.18 < 3.10"),
])
def test_each_inconsistency_is_named(name, version, message):
    assert check({**GOOD, name: version}) == [message]


def test_this_environment_fits():
    assert check(current()) == []


@pytest.mark.parametrize("module, path, package", PRIVATE_APIS)
def test_the_private_megatron_apis_we_use_are_there(module, path, package):
    from nemo_repo.convert.compat import import_bridge

    import_bridge()
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    require_private(owner, name, package)


def test_a_missing_private_api_names_itself_and_the_versions():
    with pytest.raises(RuntimeError, match=r"^owner\._gone, a private megatron-core API nemo_repo relies "
                                           r"on, is missing in megatron-core .*written for megatron-core 0\.16\.1$"):
        require_private(SimpleNamespace(__name__="owner"), "_gone", "megatron-core")
