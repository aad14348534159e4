"""Train a preference-optimisation recipe (Hydra; config in conf/train.yaml).

    python -m recipes.train                                   # default recipe tiny_cpu, 1 process
    torchrun --nproc-per-node=2 -m recipes.train recipe=tiny_cpu objective=ipo robust=none
    srun python -m recipes.train recipe=paper/mistral_re_simpo run.dir=/scratch/run1

The composed config is validated for this world size before any model or process group exists.
Exit codes: 0 done; 75 (EX_TEMPFAIL) stopped by SIGTERM / SIGUSR1 after saving a checkpoint
(start the same command again to resume); 2 invalid config (an unknown key or a value of the
wrong type, named by its full key; an override that does not compose; model.reference=precomputed:
also rows without reference sums, or sums precomputed with other settings; run.device=cuda without
a GPU; data.packing=true under the Transformer Engine layer spec) or invalid data (a
DataValidationError naming file, row and field: data.strict=true and a bad row, a file that cannot
be read, no valid pair, more skipped rows than data.max_skipped_fraction, ...), printed as one
line without a traceback (NEMO_REPO_DEBUG=1 shows it); 1 any other failure (e.g. complete
checkpoints exist but none loads: one line). Under torchrun use `python -m recipes.torchrun`
(same arguments) for these codes to reach the caller: plain torchrun exits 1.
"""

import sys

import hydra
from omegaconf import DictConfig

from nemo_repo.data.pipeline import build_data_config
from nemo_repo.data.validate import DataValidationError
from nemo_repo.device import resolve
from nemo_repo.training.config import ConfigError, check_machine, validate
from nemo_repo.training.distenv import distributed_env
from recipes.errors import invalid_input, run_hydra


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    env = distributed_env()
    try:
        settings = validate(cfg, env.world_size, build_data=build_data_config)
        spec = check_machine(settings)     # run.device here, the layer spec it implies vs packing
    except ConfigError as error:
        sys.exit(invalid_input(error, "config error", env.rank == 0))
    if env.rank == 0:
        device = resolve(settings.run.device).type
        print(f"[train] run.device={settings.run.device}: {device} "
              f"({'nccl' if device == 'cuda' else 'gloo'}), layer spec {spec}", flush=True)
    from nemo_repo.training.checkpoint import CheckpointError   # heavy imports only after validation
    from nemo_repo.training.loop import run_training

    try:
        code = run_training(settings)
    except ConfigError as error:   # found once the data is read (e.g. precomputed sums missing)
        code = invalid_input(error, "config error", env.rank == 0)
    except DataValidationError as error:
        code = invalid_input(error, "data error", env.rank == 0)
    except CheckpointError as error:   # every complete checkpoint failed to load
        if env.rank == 0:
            print(f"checkpoint error: {error}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    run_hydra(main)
