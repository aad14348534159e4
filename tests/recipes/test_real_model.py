"""`make real-model`'s driver: stage plan, skip/redo logic, stop at the first failure; and the
training config taking its model shape from an imported checkpoint (model.preset=null).
The real run itself (tens of minutes) is not part of the suite."""

import sys

import pytest

from nemo_repo.model.imported import write_metadata
from nemo_repo.model.presets import get_preset
from nemo_repo.training.config import ConfigError
from recipes.real_model import Stage, run_stages, stages
from tests.recipes.test_recipes import settings_for


def by_name(plan):
    return {stage.name: stage for stage in plan}


def test_the_plan_chains_import_train_export(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    plan = by_name(stages(out, cache, overrides=["train.max_steps=2"]))
    assert list(plan) == ["fetch", "noise", "import", "train", "export", "generate"]
    mcore, run = str(out / "mcore"), out / "train"
    assert mcore in plan["import"].argv and "--verify" in plan["import"].argv
    train = plan["train"].argv
    assert {"recipe=smollm2_cpu", "model.preset=null", f"model.init_from={mcore}",
            f"data.train={out / 'data' / 'train.jsonl'}"} <= set(train)
    assert train[-1] == "train.max_steps=2"   # the user's overrides win
    assert str(run / "checkpoints") in plan["export"].argv and "--verify" in plan["export"].argv
    assert str(out / "hf") in plan["generate"].argv
    assert (plan["train"].clean, plan["export"].clean) == (run, out / "hf")


def test_a_complete_import_is_skipped_unless_reimport(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert not by_name(stages(out, cache))["import"].skip
    (out / "mcore").mkdir(parents=True)
    (out / "mcore" / "metadata.json").write_text("{}")   # a partial import: redone
    assert not by_name(stages(out, cache))["import"].skip
    (out / "mcore" / ".complete").write_text("")
    assert by_name(stages(out, cache))["import"].skip
    assert not by_name(stages(out, cache, reimport=True))["import"].skip


def test_stages_stop_at_the_first_failure_and_mark_success(tmp_path, capsys):
    ran, marker, stale = [], tmp_path / "ok", tmp_path / "stale"
    stale.mkdir()

    def call(argv):
        ran.append(argv[-1])
        return int(argv[-1])

    plan = [Stage("a", (sys.executable, "0"), done=marker), Stage("b", ("x", "0"), skip=True),
            Stage("c", ("x", "3"), clean=stale), Stage("d", ("x", "0"))]
    assert run_stages(plan, call=call) == 3
    assert ran == ["0", "3"] and marker.is_file() and not stale.exists()
    table = capsys.readouterr().out
    assert "| b | skipped |" in table and "(exit 3)" in table and "| d |" not in table


def test_training_takes_the_imported_shape(tmp_path):
    shape = get_preset("tiny_llama")
    write_metadata(tmp_path, shape, "LlamaForCausalLM", tmp_path, {"tp": 1, "pp": 1})
    settings = settings_for("model.preset=null", f"model.init_from={tmp_path}", "+model.overrides.dtype=bf16")
    assert settings.model == get_preset("tiny_llama", dtype="bf16")
    assert settings.init_from == str(tmp_path)


@pytest.mark.parametrize("init_from, message", [(None, "model.init_from"), ("missing", "cannot be read")])
def test_a_null_preset_needs_an_imported_checkpoint(tmp_path, init_from, message):
    overrides = ["model.preset=null"] + ([f"model.init_from={tmp_path / init_from}"] if init_from else [])
    with pytest.raises(ConfigError, match=message):
        settings_for(*overrides)
