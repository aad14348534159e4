"""Every shipped recipe composes with Hydra and validates (7B/8B on 8 ranks, nothing allocated);
bad configs fail before anything heavy starts, naming the key."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from nemo_repo.data.pipeline import build_data_config
from nemo_repo.objectives import ReferenceMode, RobustMode
from nemo_repo.training.config import ConfigError, validate
from nemo_repo.training.outputs import FinalPass
from tests.dist import REPO_ROOT
from tests.training.runs import train

CONF = REPO_ROOT / "conf"
RECIPES = sorted(str(p.relative_to(CONF / "recipe").with_suffix("")) for p in (CONF / "recipe").rglob("*.yaml")
                 if not p.name.startswith("_"))
PAPER_GPUS = 8


def composed(*overrides):
    """The config as `python -m recipes.train <overrides>` sees it (hydra: resolvers set)."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def settings_for(*overrides, world_size=1):
    return validate(composed(*overrides), world_size, build_data=build_data_config)


def test_the_paper_grid_is_shipped():
    for model in ("mistral", "llama3"):
        for objective in ("dpo", "ipo", "simpo", "cpo"):
            assert f"paper/{model}_{objective}" in RECIPES and f"paper/{model}_re_{objective}" in RECIPES
    assert {"tiny_cpu", "smollm2_cpu", "paper/multipref_re_dpo"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_validates(recipe):
    world = PAPER_GPUS if recipe.startswith("paper/") else 1
    settings = settings_for(f"recipe={recipe}", world_size=world)
    assert settings.run.dir == f"runs/{recipe}"
    if recipe.startswith("paper/"):
        name = Path(recipe).name
        assert settings.parallel.global_batch_size == 128
        assert settings.robust.mode == ("re" if "_re_" in name else "none")
        assert settings.objective.name == name.split("_")[-1]
        assert settings.reliability.eta0 == 0.9 and settings.reliability.alpha == 0.1
        assert settings.model.name == ("mistral_7b_v0_2" if name.startswith("mistral") else "llama3_8b")


def test_paper_hyperparameters_come_from_the_simpo_paper():
    simpo = settings_for("recipe=paper/llama3_re_simpo", world_size=PAPER_GPUS)
    assert (simpo.objective.beta, simpo.objective.simpo_gamma_beta_ratio, simpo.optim.lr) == (10.0, 0.3, 1e-6)
    mistral = settings_for("recipe=paper/mistral_simpo", world_size=PAPER_GPUS)
    assert (mistral.objective.beta, mistral.objective.simpo_gamma_beta_ratio) == (2.5, 0.1)
    assert mistral.optim.warmup_steps == round(0.1 * mistral.train.max_steps)


def test_command_line_overrides_win_over_the_recipe():
    settings = settings_for("recipe=paper/mistral_re_dpo", "objective.beta=0.05", "parallel=single",
                            "parallel.global_batch_size=4", "robust=ls", world_size=1)
    assert settings.objective.beta == 0.05 and settings.robust.mode == "ls"
    assert settings.parallel.tensor_model_parallel_size == 1


@pytest.mark.parametrize("overrides, message", [
    (["objective.name=ppo"], "objective"),
    (["+objective.bogus=1"], "objective.bogus"),
    (["robust.mode=magic"], "robust"),
    (["parallel.tensor_model_parallel_size=3"], "parallel"),
    (["parallel.global_batch_size=7"], "global_batch_size"),
    (["train.max_steps=0"], "train.max_steps"),
    (["model.preset=gpt5"], "model.preset"),
    (["data.max_length=1"], "max_length"),
    (["+data.colour=red"], "data.colour"),
    (["optim.lr=-1"], "lr"),
    (["reliability.eta0=1.5"], "eta0"),
    (["debug.signal=SIGFOO"], "debug.signal"),
    (["objective.beta=abc"], "objective.beta: Value 'abc' of type 'str' could not be converted to Float"),
    (["parallel.tensor_model_parallel_size=two"], "parallel.tensor_model_parallel_size: Value 'two'"),
    (["+model.overrides.num_layers=x"], "model.overrides.num_layers"),
    (["+model.overrides.colour=red"], "unknown key model.overrides.colour"),
    (["data.synthetic.n_train=abc"], "data.synthetic.n_train"),
    (["+data.synthetic.colour=red"], "unknown key data.synthetic.colour"),
    (["reliability.scale_bounds=[0.1,1.0,50.0]"], "scale_bounds"),
    (["+train.max_step=5"], "unknown key train.max_step"),
    (["train.final_pass=twice"], "train.final_pass"),
    (["train.final_pass=none", "reliability.final_refit=true"], "train.final_pass=last_visit or full"),
])
def test_bad_configs_fail_with_a_message_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        settings_for(*overrides, world_size=2 if "tensor" in overrides[0] else 1)


def test_documented_data_keys_need_no_plus():
    settings = settings_for("data.strict=true", "data.packing=true")
    assert settings.data.strict and settings.data.packing


@pytest.mark.parametrize("override, message", [
    ("objective.beta=abc", "objective.beta: Value 'abc' of type 'str' could not be converted to Float"),
    ("parallel.tensor_model_parallel_size=two", "parallel.tensor_model_parallel_size: Value 'two'"),
    ("data.nosuch=1", "unknown key data.nosuch; valid keys: "),   # refused by Hydra while composing
])
def test_train_names_the_key_in_one_line_and_exits_2(tmp_path, monkeypatch, override, message):
    monkeypatch.delenv("NEMO_REPO_DEBUG", raising=False)
    done = train([f"run.dir={tmp_path / 'run'}", override], timeout=90)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith(f"config error: {message}") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("overrides, reference", [
    ([], ReferenceMode.MODEL), (["objective=ipo", "model.reference=precomputed"], ReferenceMode.PRECOMPUTED),
    (["objective=simpo"], ReferenceMode.NONE), (["objective=cpo", "model.reference=model"], ReferenceMode.NONE)])
def test_the_reference_mode_is_resolved_once_with_the_objective(overrides, reference):
    assert settings_for(*overrides).reference is reference


def test_modes_are_enums_and_yaml_strings_still_work():
    settings = settings_for("robust=ls")
    assert settings.robust.mode is RobustMode.LS and settings.robust.mode == "ls"
    assert not settings.robust.trains_reliability and settings_for().robust.trains_reliability
    assert settings.train.final_pass is FinalPass.LAST_VISIT
    assert settings_for("train.final_pass=full").train.final_pass is FinalPass.FULL
