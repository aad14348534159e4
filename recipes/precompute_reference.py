"""Precompute the reference model's log-prob sums for `model.reference=precomputed` (Hydra; the
same conf/train.yaml as recipes/train.py, so the same model, data and parallel settings).

    python -m recipes.precompute_reference recipe=tiny_cpu +out=runs/ref/tiny
    torchrun --nproc-per-node=2 -m recipes.precompute_reference recipe=... parallel=tp2 +out=DIR

The reference is the policy at initialisation: model.init_from's weights, or the seeded init
(run.seed) without one. Writes DIR/train.jsonl and DIR/validation.jsonl (the rows of each split
with reference_chosen / reference_rejected added; a data.validation_fraction hold-out becomes its
own file), DIR/truth.json when the data has one, and DIR/reference_logps.json (what the sums were
computed with; training checks it), then prints the overrides that train on them. Exit codes: 0
done; 2 invalid config, no +out or invalid data (one line, no traceback; NEMO_REPO_DEBUG=1 shows it).
"""

import sys

import hydra
from omegaconf import DictConfig

from nemo_repo.data.pipeline import build_data_config
from nemo_repo.data.validate import DataValidationError
from nemo_repo.training.config import ConfigError, check_machine, validate
from nemo_repo.training.distenv import distributed_env
from recipes.errors import invalid_input, run_hydra


def training_overrides(out: str, settings, record: dict) -> list[str]:
    """The overrides that point a training run with these settings at the precomputed files
    (`++`: set the key whether or not the data group defines it)."""
    overrides = [f"++data.train={out}/{record['files']['train']}"]
    if "validation" in record["files"]:
        overrides.append(f"++data.validation={out}/{record['files']['validation']}")
    if settings.data.validation_fraction:
        overrides.append("++data.validation_fraction=0")
    if settings.data.synthetic is not None:
        overrides += ["data.synthetic=null", f"++data.tokenizer={record['tokenizer']}"]
    return [*overrides, "model.reference=precomputed"]


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    env = distributed_env()
    out = cfg.get("out")
    try:
        if not out:
            raise ConfigError("set the output folder with +out=DIR")
        settings = validate(cfg, env.world_size, build_data=build_data_config)
        check_machine(settings)
        if not settings.objective.needs_reference:
            raise ConfigError(f"objective {settings.objective.name!r} uses no reference model: "
                              "nothing to precompute")
    except ConfigError as error:
        sys.exit(invalid_input(error, "config error", env.rank == 0))
    from nemo_repo.training.reference import PROVENANCE_FILE, precompute_reference

    try:
        record = precompute_reference(settings, out)
    except DataValidationError as error:
        sys.exit(invalid_input(error, "data error", env.rank == 0))
    if env.rank == 0:
        counts = ", ".join(f"{out}/{name} ({record['pairs'][split]} pairs)"
                           for split, name in record["files"].items())
        print(f"wrote {counts} and {out}/{PROVENANCE_FILE}\ntrain on them with:\n  "
              + " ".join(training_overrides(out, settings, record)), flush=True)


if __name__ == "__main__":
    run_hydra(main)
