"""Runs on CPU (no `gpu` marker): every run of the GPU smoke suite composes and validates, so a
typo in its overrides is found here and not on the GPU machine."""

import pytest

from nemo_repo.data.pipeline import build_data_config
from nemo_repo.training.config import validate
from tests.gpu.test_smoke import ALL_RUNS, GPU
from tests.recipes.test_recipes import composed
from tests.training.runs import tiny


@pytest.mark.parametrize("world_size, overrides", ALL_RUNS)
def test_every_gpu_run_validates(tmp_path, world_size, overrides):
    settings = validate(composed(*tiny(tmp_path / "run", tmp_path / "cache", *GPU, *overrides)),
                        world_size, build_data=build_data_config)
    assert settings.run.device == "cuda"
