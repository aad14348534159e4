"""Render slurm/train.sbatch for one training run and submit it (or print it with --dry-run).

    python -m recipes.launch --nodes 2 --gpus-per-node 8 --partition gpu --time 08:00:00 \\
        --run-dir /scratch/$USER/mistral_re_dpo --dry-run -- recipe=paper/mistral_re_dpo

The template's #SBATCH header is filled from the options, the launcher settings are exported after
it and the Hydra overrides are fixed into the script (a requeued job re-runs the same file); the
body is slurm/train.sbatch's own. The overrides are composed and validated for the world size
(nodes x GPUs per node) before anything is written or submitted. Without --dry-run the script is
written to RUN_DIR/slurm/train.sbatch, job logs go to RUN_DIR/slurm/%x-%j.out, and `sbatch` submits it.
Exit codes: 0 ok; 2 bad input (options or config); otherwise sbatch's exit code.
"""

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from recipes.errors import EXIT_INVALID_INPUT, composition_error, invalid_input

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "slurm" / "train.sbatch"
MAX_SIGNAL_SECONDS = 65535   # Slurm's limit for --signal=...@seconds
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_SBATCH = re.compile(r"^#SBATCH\s+--([\w-]+)(?:=(.*))?$")


class LaunchError(ValueError):
    """Bad launcher input; the message names the option."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=8,
                        help="GPUs per node = processes per node (default 8)")
    parser.add_argument("--run-dir", required=True,
                        help="run directory on a shared file system (run.dir; checkpoints, logs)")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--account", help="Slurm account")
    parser.add_argument("--time", help="time limit, [D-]HH:MM:SS (default: the template's)")
    parser.add_argument("--job-name", help="job name (default repo-<recipe>)")
    parser.add_argument("--signal-seconds", type=int,
                        help="USR1 this many seconds before the time limit: checkpoint + requeue "
                             "(default: the template's)")
    parser.add_argument("--max-restarts", type=int,
                        help="requeue at most this many times (default: MAX_RESTARTS in slurm/train.sbatch)")
    parser.add_argument("--container-image", help="pyxis/enroot image (srun --container-image)")
    parser.add_argument("--container-mounts",
                        help="extra srun --container-mounts (the repository is always mounted)")
    parser.add_argument("--master-port", type=int, help="rendezvous port (default derived from the job id)")
    parser.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="extra #SBATCH option, e.g. --sbatch-arg=--qos=high (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the layout and the rendered script; write and submit nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for recipes/train.py")
    return parser


def time_limit_seconds(value: str) -> int:
    """Seconds in a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = _TIME.match(value)
    if not match:
        raise LaunchError(f"--time {value!r} is not a Slurm time limit ([D-]HH:MM:SS)")
    days, a, b, c = (int(x) if x is not None else None for x in match.groups())
    if days is not None:                       # D-HH[:MM[:SS]]
        hours, minutes, seconds = a, b or 0, c or 0
    elif c is not None:                        # HH:MM:SS
        hours, minutes, seconds = a, b, c
    else:                                      # MM[:SS]
        hours, minutes, seconds = 0, a, b or 0
    return (days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def template_header(text: str) -> dict:
    """The #SBATCH options of a template, in order (value "" = bare flag)."""
    options = {}
    for line in text.splitlines():
        match = _SBATCH.match(line)
        if match:
            options[match.group(1)] = match.group(2) or ""
    if not options:
        raise LaunchError(f"{TEMPLATE}: no #SBATCH header")
    return options


def fill_defaults(args, header: dict) -> None:
    """--time and --signal-seconds default to the template's #SBATCH values."""
    args.time = args.time or header.get("time", "")
    if args.signal_seconds is None:
        args.signal_seconds = int(header.get("signal", "@600").rpartition("@")[2])


def check_options(args) -> None:
    for name in ("nodes", "gpus_per_node"):
        if getattr(args, name) < 1:
            raise LaunchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_restarts is not None and args.max_restarts < 0:
        raise LaunchError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    limit = time_limit_seconds(args.time)
    if not 0 < args.signal_seconds <= MAX_SIGNAL_SECONDS:
        raise LaunchError(f"--signal-seconds must be in 1..{MAX_SIGNAL_SECONDS}, got {args.signal_seconds}")
    if args.signal_seconds >= limit:
        raise LaunchError(f"--signal-seconds {args.signal_seconds} must be shorter than --time "
                          f"{args.time} ({limit} s): the job would stop as soon as it starts")
    if args.master_port is not None and not 1024 <= args.master_port <= 65535:
        raise LaunchError(f"--master-port must be in 1024..65535, got {args.master_port}")
    if args.container_mounts and not args.container_image:
        raise LaunchError("--container-mounts needs --container-image")
    for override in args.overrides:
        if "=" not in override:
            raise LaunchError(f"override {override!r} is not key=value")
        if override.split("=", 1)[0].lstrip("+~") == "run.dir":
            raise LaunchError(f"override {override!r}: give the run directory as --run-dir")
    for extra in args.sbatch_arg:
        if not extra.startswith("--"):
            raise LaunchError(f"--sbatch-arg {extra!r} must be a long option (--name[=value])")


def compose_and_validate(overrides: list[str], world_size: int):
    """The training config as recipes/train.py will compose it, validated for `world_size`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from nemo_repo.data.pipeline import build_data_config
    from nemo_repo.training.config import ConfigError, validate

    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    except Exception as error:   # hydra's errors name the override
        raise LaunchError(f"overrides do not compose: {composition_error(error)}") from error
    HydraConfig.instance().set_config(cfg)   # run.name interpolates ${hydra:runtime.choices.recipe}
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        return validate(cfg, world_size, build_data=build_data_config)
    except ConfigError as error:
        raise LaunchError(f"config error at world size {world_size}: {error}") from error


def sbatch_options(args, run_dir: Path, recipe: str) -> dict:
    """#SBATCH options the launcher sets (None = leave the template's value or absence)."""
    options = {"job-name": args.job_name or f"repo-{recipe.replace('/', '-')}",
               "nodes": str(args.nodes), "ntasks-per-node": str(args.gpus_per_node),
               "gpus-per-node": str(args.gpus_per_node), "time": args.time,
               "signal": f"B:USR1@{args.signal_seconds}", "output": str(run_dir / "slurm" / "%x-%j.out"),
               "partition": args.partition, "account": args.account}
    for extra in args.sbatch_arg:
        name, _, value = extra[2:].partition("=")
        options[name] = value or ""
    return options


def render(template: str, options: dict, env: dict, overrides: list[str]) -> str:
    """The template with its #SBATCH header updated from `options` (value "" = bare flag), then
    `env` exported and the overrides fixed in front of any given at submission."""
    lines = template.splitlines()
    header = [i for i, line in enumerate(lines) if _SBATCH.match(line)]
    merged = template_header(template)
    merged.update({name: value for name, value in options.items() if value is not None})
    block = [f"#SBATCH --{name}" + (f"={value}" if value else "") for name, value in merged.items()]
    block += ["", "# --- rendered by recipes/launch.py ---"]
    block += [f"export {name}={shlex.quote(str(value))}" for name, value in env.items() if value is not None]
    block += ["set -- " + " ".join(shlex.quote(o) for o in overrides) + ' "$@"']
    body = [line for i, line in enumerate(lines) if i > header[-1]]
    return "\n".join([*lines[:header[0]], *block, *body]) + "\n"


def layout_report(args, settings, run_dir: Path) -> str:
    parallel, world = settings.parallel, args.nodes * args.gpus_per_node
    tp, pp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size
    port = args.master_port if args.master_port is not None else "10000 + SLURM_JOB_ID % 50000"
    lines = [f"world size {world} = {args.nodes} node(s) x {args.gpus_per_node} GPU(s); "
             f"TP={tp} PP={pp} DP={parallel.data_parallel_size(world)}; "
             f"{parallel.num_microbatches(world)} micro-batch(es) of {parallel.micro_batch_size} "
             f"per DP rank per step (global batch {parallel.global_batch_size})"]
    for node in range(args.nodes):
        first = node * args.gpus_per_node
        where = " = MASTER_ADDR (first host of the allocation)" if node == 0 else ""
        lines.append(f"node {node}{where}: ranks {first}-{first + args.gpus_per_node - 1} "
                     f"(LOCAL_RANK 0-{args.gpus_per_node - 1})")
    lines.append(f"rendezvous: MASTER_ADDR=<first host of SLURM_JOB_NODELIST> MASTER_PORT={port}")
    lines.append(f"run dir: {run_dir} (resumes from {settings.checkpoint.dir})")
    return "\n".join(f"# {line}" for line in lines)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        template = TEMPLATE.read_text()
        fill_defaults(args, template_header(template))
        check_options(args)
        run_dir = Path(args.run_dir).expanduser().resolve()
        overrides = [*args.overrides, f"run.dir={run_dir}"]
        settings = compose_and_validate(overrides, args.nodes * args.gpus_per_node)
        recipe = settings.run.name
        env = {"REPO_DIR": REPO_ROOT, "GPUS_PER_NODE": args.gpus_per_node,
               "MAX_RESTARTS": args.max_restarts, "MASTER_PORT": args.master_port,
               "CONTAINER_IMAGE": args.container_image, "CONTAINER_MOUNTS": args.container_mounts}
        script = render(template, sbatch_options(args, run_dir, recipe), env, overrides)
    except LaunchError as error:
        return invalid_input(error, "error")
    print(layout_report(args, settings, run_dir))
    if args.dry_run:
        print(f"# sbatch {run_dir / 'slurm' / 'train.sbatch'}\n{script}", end="")
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch not found on PATH (run on a Slurm login node, or use --dry-run)",
              file=sys.stderr)
        return EXIT_INVALID_INPUT
    path = run_dir / "slurm" / "train.sbatch"
    path.parent.mkdir(parents=True, exist_ok=True)   # Slurm does not create the log directory
    path.write_text(script)
    return subprocess.run(["sbatch", str(path)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
