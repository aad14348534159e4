"""Process coordinates from the launcher: torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or Slurm srun
(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID); MASTER_ADDR / MASTER_PORT come from the launcher
(slurm/ sets them). Without either, the process is a world of one."""

import os
from dataclasses import dataclass

_SLURM = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"}


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int


def distributed_env(environ=os.environ) -> DistEnv:
    """Read (and, under srun, export in torchrun's names) this process's rank and world size."""
    if "RANK" not in environ and "SLURM_PROCID" in environ:
        for name, slurm in _SLURM.items():
            environ[name] = environ[slurm]
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in environ]
        if missing and int(environ["WORLD_SIZE"]) > 1:
            raise RuntimeError(f"running under srun with {environ['WORLD_SIZE']} tasks but "
                               f"{' and '.join(missing)} not set (export them in the sbatch script)")
    return DistEnv(rank=int(environ.get("RANK", 0)), world_size=int(environ.get("WORLD_SIZE", 1)),
                   local_rank=int(environ.get("LOCAL_RANK", 0)))
