"""Bad data through the recipes: exit code 2 and one line naming file, row and field, no traceback
(NEMO_REPO_DEBUG=1 shows it); recipes.train prints the data report and writes data_report.json,
and refuses data that skips more than data.max_skipped_fraction."""

import dataclasses
import json

import pytest
from omegaconf import OmegaConf

from nemo_repo.data.pipeline import DataConfig
from nemo_repo.data.validate import DataValidationError
from nemo_repo.training.config import ConfigError
from recipes.inject_noise import main as inject_noise
from recipes.prepare_data import main as prepare_data
from tests.dist import REPO_ROOT
from tests.recipes.test_recipes import settings_for
from tests.training.runs import train


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A small synthetic benchmark and a copy of its training file with line 3 broken."""
    root = tmp_path_factory.mktemp("bench")
    assert prepare_data(["synthetic", "--out", str(root), "--n-train", "64", "--n-validation", "8"]) == 0
    lines = (root / "train.jsonl").read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"chosen"', '"answer"')
    (root / "broken.jsonl").write_text("".join(lines))
    return root


def check(bench, tmp_path, *flags):
    return prepare_data(["check", "--train", str(bench / "broken.jsonl"), "--tokenizer", str(bench / "tokenizer"),
                         "--cache-dir", str(tmp_path / "cache"), "--max-length", "16", *flags])


def test_prepare_data_names_the_row_and_exits_2(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NEMO_REPO_DEBUG", raising=False)
    assert check(bench, tmp_path, "--strict") == 2
    err = capsys.readouterr().err
    assert err == f"invalid data: {bench / 'broken.jsonl'}, line 3, field 'chosen': missing [missing_field]\n"
    assert check(bench, tmp_path, "--train", str(bench / "nosuch.jsonl")) == 2
    assert "nosuch.jsonl: does not exist" in capsys.readouterr().err
    monkeypatch.setenv("NEMO_REPO_DEBUG", "1")
    with pytest.raises(DataValidationError, match="line 3, field 'chosen'"):
        check(bench, tmp_path, "--strict")


def test_inject_noise_refuses_rows_it_cannot_flip(bench, tmp_path, capsys):
    assert inject_noise(["--input", str(bench / "broken.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert f"{bench / 'broken.jsonl'}, line 3, field 'chosen': missing" in capsys.readouterr().err
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text((bench / "train.jsonl").read_text() + '{"id": "x", "chosen": \n')
    assert inject_noise(["--input", str(bad_json), "--out", str(tmp_path / "out")]) == 2
    assert f"{bad_json}, line 65: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _train_args(bench, tmp_path, train_file, *extra):
    return [f"run.dir={tmp_path / 'run'}", f"++data.cache_dir={tmp_path / 'cache'}", "recipe=tiny_cpu",
            "data.synthetic=null", f"data.train={train_file}", f"data.validation={bench / 'validation.jsonl'}",
            f"data.tokenizer={bench / 'tokenizer'}", "parallel.micro_batch_size=4",
            "parallel.global_batch_size=8", "train.max_steps=1", "train.eval_interval=0",
            "checkpoint.interval=0", "checkpoint.save_final=false", "logging.progress=false",
            "logging.tensorboard=false", "logging.eta_log_interval=0", *extra]


def test_train_stops_on_bad_data_with_exit_2_and_no_traceback(bench, tmp_path):
    done = train(_train_args(bench, tmp_path, bench / "broken.jsonl", "data.strict=true"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"data error: {bench / 'broken.jsonl'}, line 3, field 'chosen': missing [missing_field]" in done.stderr


def test_every_data_setting_is_in_the_base_config():
    """conf/data/_base.yaml lists every DataConfig field, so data.KEY=... needs no `++`."""
    base = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "data" / "_base.yaml"))
    assert base == {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(DataConfig)}
    settings = settings_for("data.strict=true", "data.max_skipped_fraction=0.1")
    assert settings.data.strict and settings.data.max_skipped_fraction == 0.1


@pytest.mark.parametrize("overrides, message", [
    (["data.max_skipped_fraction=1.5"], "data.max_skipped_fraction"),
    (["data.format=csv"], "data.format"),
    (["data.synthetic=null", "data.train=x.jsonl", "data.tokenizer=t"], "validation split"),
])
def test_data_settings_are_checked_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        settings_for(*overrides)


def test_train_shows_and_writes_the_data_report(bench, tmp_path):
    done = train(_train_args(bench, tmp_path, bench / "broken.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[train] " + str(bench / "broken.jsonl") + ": 64 rows read, 63 pairs kept, 1 skipped (missing_field=1)" \
        in done.stdout
    assert f"{bench / 'broken.jsonl'}, line 3, field 'chosen': missing [missing_field]" in done.stdout
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["splits"]["train"]["skipped"] == {"missing_field": 1}
    assert report["splits"]["train"]["errors"][0]["row"] == 3 and report["warnings"] == []


def test_a_tokenizer_larger_than_the_model_vocabulary_is_a_config_error(bench, tmp_path):
    done = train(_train_args(bench, tmp_path, bench / "train.jsonl", "++model.overrides.vocab_size=8"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "config error: the tokenizer" in done.stderr and "only 8" in done.stderr
