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

    if compat.is_applied():
        compat.remove_cpu_compat()   # one offender must not fail every test after it
        pytest.fail("this test left nemo_repo.model.compat's patches on torch: run megatron in a "
                    "child process (tests/dist.py)")
