import os

import pytest

# Several test processes share two cores: one intra-op thread each keeps them from thrashing.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def torch_left_unpatched():
    """megatron runs in child processes; the pytest process must never keep the CPU patches
    (nemo_repo.model.compat) that would change torch for the tests after it."""
    yield
    from nemo_repo.model import compat

    assert not compat.is_applied(), "this test left nemo_repo.model.compat's patches on torch"
