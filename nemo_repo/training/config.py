"""Validate the whole composed training config before anything heavy starts.

`validate(cfg, world_size)` turns the Hydra/OmegaConf tree (conf/train.yaml) into typed settings,
constructing every layer's own config dataclass (each checks its fields) and the parallel layout
for `world_size`, and raises ConfigError naming the config key on the first problem. Nothing is
allocated: validating the 7B/8B recipes is cheap.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_repo.device import DEVICES, DeviceError, resolve
from nemo_repo.model.parallel import LayoutError, ParallelConfig, validate_layout
from nemo_repo.model.imported import ImportedModelError, imported_model_config
from nemo_repo.model.presets import ModelConfig, get_preset, resolved_layer_spec
from nemo_repo.objectives import ObjectiveConfig, ReferenceMode, RobustConfig, resolve_reference_mode
from nemo_repo.training.optim import OptimConfig
from nemo_repo.training.outputs import FinalPass
from nemo_repo.training.signals import FaultInjection
from nemo_repo.reliability import ReliabilityConfig


class ConfigError(ValueError):
    """A training config that cannot run; the message names the offending key."""


@dataclass(frozen=True)
class RunSettings:
    dir: str
    seed: int
    device: str


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int
    eval_interval: int
    eval_max_pairs: int | None
    stop_at_step: int | None = None
    final_pass: FinalPass = FinalPass.LAST_VISIT   # the Delta of pair_weights.jsonl (training/outputs.py)

    def __post_init__(self):
        choices = tuple(choice.value for choice in FinalPass)
        if self.final_pass not in choices:
            raise ValueError(f"train.final_pass must be one of {choices}, got {self.final_pass!r}")
        object.__setattr__(self, "final_pass", FinalPass(self.final_pass))


@dataclass(frozen=True)
class CheckpointSettings:
    dir: str
    interval: int
    keep_last: int
    resume: bool
    save_final: bool


@dataclass(frozen=True)
class LoggingSettings:
    log_interval: int
    eta_log_interval: int
    tensorboard: bool
    progress: bool


@dataclass(frozen=True)
class Settings:
    """Everything the loop needs, typed and checked."""
    run: RunSettings
    train: TrainSettings
    model: ModelConfig
    init_from: str | None
    objective: ObjectiveConfig
    robust: RobustConfig
    reliability: ReliabilityConfig
    parallel: ParallelConfig
    optim: OptimConfig
    data: Any
    checkpoint: CheckpointSettings
    logging: LoggingSettings
    fault: FaultInjection
    world_size: int
    resolved: dict          # the resolved config tree (saved with checkpoints and in the run dir)
    # model.reference (model | precomputed, conf/model/_base.yaml) resolved with the objective:
    # MODEL | PRECOMPUTED | NONE (SimPO / CPO)
    reference: ReferenceMode = ReferenceMode.MODEL


def _section(cfg: dict, key: str) -> dict:
    if key not in cfg or not isinstance(cfg[key], dict):
        raise ConfigError(f"config section `{key}` is missing (expected a mapping)")
    return dict(cfg[key])


def build(cls, section: str, values: dict):
    """cls(**values) with unknown keys and field errors reported under `section`."""
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
                          f"valid keys: {', '.join(sorted(fields))}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid `{section}`: {error}") from error


def _non_negative_ints(section: str, values: dict, names) -> None:
    for name in names:
        value = values.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{section}.{name} must be a non-negative integer, got {value!r}")


def _reference(section: dict, objective: ObjectiveConfig) -> ReferenceMode:
    try:
        return resolve_reference_mode(objective, section.get("reference") or ReferenceMode.MODEL)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _model(section: dict) -> tuple[ModelConfig, str | None]:
    unknown = sorted(set(section) - {"preset", "overrides", "init_from", "tokenizer", "reference",
                                     "layer_spec"})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join('model.' + k for k in unknown)}")
    preset, init_from = section.get("preset"), section.get("init_from")
    try:
        imported = imported_model_config(init_from) if preset is None else None
    except ImportedModelError as error:
        raise ConfigError(f"model.preset is null: {error}") from error
    try:
        model = dataclasses.replace(imported or get_preset(preset), **dict(section.get("overrides") or {}),
                                    layer_spec=section.get("layer_spec") or "auto")
    except KeyError as error:
        raise ConfigError(f"model.preset: {error.args[0]}") from error
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid model.overrides: {error}") from error
    return model, init_from


def _optim(section: dict, max_steps: int, parallel: ParallelConfig) -> OptimConfig:
    """OptimConfig; warmup_steps (when not null) wins over warmup_ratio * max_steps."""
    ratio = section.pop("warmup_ratio", None)
    if section.get("warmup_steps") is None:
        section.pop("warmup_steps", None)
    if ratio is not None and "warmup_steps" not in section:
        if not 0 <= ratio <= 1:
            raise ConfigError(f"optim.warmup_ratio must lie in [0, 1], got {ratio}")
        section["warmup_steps"] = int(round(ratio * max_steps))
    for key in ("total_steps", "use_distributed_optimizer"):
        if key in section:
            raise ConfigError(f"optim.{key} is derived from train.max_steps / "
                              f"parallel.use_distributed_optimizer; do not set it")
    return build(OptimConfig, "optim", {**section, "total_steps": max_steps,
                                        "use_distributed_optimizer": parallel.use_distributed_optimizer})


def _fault(section: dict) -> FaultInjection:
    unknown = sorted(set(section) - {"signal_at_step", "signal"})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join('debug.' + k for k in unknown)}")
    try:
        return FaultInjection(section.get("signal_at_step"), section.get("signal", "SIGTERM"))
    except KeyError as error:
        raise ConfigError(f"debug.signal: unknown signal {error.args[0]!r}") from error


def validate(cfg: DictConfig | dict, world_size: int, build_data=None) -> Settings:
    """Check the composed config for a world of `world_size` processes; return typed Settings.

    `build_data(section) -> settings` validates the data section (the data layer's config);
    it raises ConfigError / ValueError / KeyError."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except Exception as error:   # interpolation errors name the key themselves
        raise ConfigError(f"config does not resolve: {error}") from error
    run = _section(resolved, "run")
    train = _section(resolved, "train")
    checkpoint = _section(resolved, "checkpoint")
    logging = _section(resolved, "logging")
    if run.get("device") not in DEVICES:
        raise ConfigError(f"run.device must be one of {', '.join(DEVICES)}, got {run.get('device')!r}")
    if not run.get("dir"):
        raise ConfigError("run.dir must name the run directory")
    _non_negative_ints("run", run, ["seed"])
    _non_negative_ints("train", train, ["max_steps", "eval_interval"])
    if train["max_steps"] < 1:
        raise ConfigError(f"train.max_steps must be >= 1, got {train['max_steps']}")
    for optional in ("eval_max_pairs", "stop_at_step"):
        if train.get(optional) is not None:
            _non_negative_ints("train", train, [optional])
    _non_negative_ints("checkpoint", checkpoint, ["interval", "keep_last"])
    _non_negative_ints("logging", logging, ["log_interval", "eta_log_interval"])

    model, init_from = _model(_section(resolved, "model"))
    objective = build(ObjectiveConfig, "objective", _section(resolved, "objective"))
    reference = _reference(_section(resolved, "model"), objective)
    robust = build(RobustConfig, "robust", _section(resolved, "robust"))
    reliability = build(ReliabilityConfig, "reliability", _section(resolved, "reliability"))
    parallel = build(ParallelConfig, "parallel", _section(resolved, "parallel"))
    try:
        validate_layout(parallel, model, world_size)
    except LayoutError as error:
        raise ConfigError(f"parallel: {error}") from error
    try:
        data = build_data(_section(resolved, "data")) if build_data else _section(resolved, "data")
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(str(error)) from error
    if build_data and data.synthetic is None and not data.validation and not data.validation_fraction:
        raise ConfigError("training evaluates on a validation split: set data.validation (a file, "
                          "or the DatasetDict split data.validation_split) or data.validation_fraction")
    settings = Settings(
        run=build(RunSettings, "run", {k: run[k] for k in ("dir", "seed", "device")}),
        train=build(TrainSettings, "train", train),
        model=model, init_from=init_from, objective=objective, robust=robust,
        reliability=reliability, parallel=parallel, data=data,
        optim=_optim(_section(resolved, "optim"), train["max_steps"], parallel),
        checkpoint=build(CheckpointSettings, "checkpoint", checkpoint),
        logging=build(LoggingSettings, "logging", logging),
        fault=_fault(resolved.get("debug") or {}), world_size=world_size, resolved=resolved,
        reference=reference)
    if robust.trains_reliability and reliability.final_refit \
            and settings.train.final_pass is FinalPass.NONE:
        raise ConfigError("reliability.final_refit refits eta on the training pairs' final Delta: "
                          "set train.final_pass=last_visit or full (not none)")
    if reference is ReferenceMode.PRECOMPUTED and build_data is not None:
        from nemo_repo.training.reference import check_provenance

        try:
            check_provenance(settings)
        except ValueError as error:
            raise ConfigError(f"model.reference=precomputed, but the reference sums were computed "
                              f"with other settings: {error}. Precompute them again with this config "
                              f"(python -m recipes.precompute_reference ... +out=DIR)") from error
    return settings


def check_machine(settings: Settings) -> str:
    """What only the machine that runs the job can tell (`validate` also runs on a login node
    without GPUs): run.device is available here, and the layer spec it implies can run the
    data layout. Returns the resolved layer spec ("local" | "transformer_engine").

    Packing puts several sequences in one row behind a block-diagonal mask; the TE spec's causal
    attention ignores explicit masks, so packed pairs would attend to each other: refused
    (use model.layer_spec=local, or data.packing=false) until THD / cu_seqlens packing exists."""
    try:
        cuda = resolve(settings.run.device).type == "cuda"
        spec = resolved_layer_spec(settings.model, cuda=cuda)
    except (DeviceError, ValueError) as error:
        raise ConfigError(str(error)) from error
    if spec == "transformer_engine" and getattr(settings.data, "packing", False):
        raise ConfigError("data.packing=true is not supported with the Transformer Engine layer spec "
                          "(its causal attention ignores the block-diagonal mask, so packed sequences "
                          "would attend to each other): set data.packing=false, or "
                          "model.layer_spec=local to keep packing with megatron's own attention")
    return spec
