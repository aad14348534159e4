"""Validate the whole composed training config before anything heavy starts.

`validate(cfg, world_size)` turns the Hydra/OmegaConf tree (conf/train.yaml) into typed settings:
every section is typed by its dataclass as an OmegaConf structured config (config_schema.typed:
unknown keys and wrong types, named by their full key), then the dataclass is constructed (its own
range and choice checks), then the parallel layout is checked for `world_size`. The first problem
raises ConfigError naming the config key. Nothing is allocated: validating the 7B/8B recipes is cheap.
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_repo.config_schema import typed
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


def _at_least(section: str, settings, minimum: int, *names: str) -> None:
    """Fields `names` of `settings` (None = unset) are >= minimum."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < minimum:
            raise ValueError(f"{section}.{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class RunSettings:
    dir: str
    seed: int
    device: str
    name: str | None = None    # the recipe's name (run.dir defaults to runs/<name>)

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"run.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not self.dir:
            raise ValueError("run.dir must name the run directory")
        _at_least("run", self, 0, "seed")


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int
    eval_interval: int
    eval_max_pairs: int | None
    stop_at_step: int | None = None
    final_pass: FinalPass = FinalPass.LAST_VISIT   # the Delta of pair_weights.jsonl (training/outputs.py)

    def __post_init__(self):
        _at_least("train", self, 1, "max_steps")
        _at_least("train", self, 0, "eval_interval", "eval_max_pairs", "stop_at_step")
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

    def __post_init__(self):
        _at_least("checkpoint", self, 0, "interval", "keep_last")


@dataclass(frozen=True)
class LoggingSettings:
    log_interval: int
    eta_log_interval: int
    tensorboard: bool
    progress: bool

    def __post_init__(self):
        _at_least("logging", self, 0, "log_interval", "eta_log_interval")


@dataclass(frozen=True)
class ModelSection:
    """conf/model (_base.yaml documents the keys): where the ModelConfig comes from."""
    preset: str | None = None       # presets.PRESETS name; null = the shape recorded in init_from
    overrides: dict = field(default_factory=dict)   # ModelConfig fields to change
    init_from: str | None = None
    reference: str = "model"
    layer_spec: str = "auto"


@dataclass(frozen=True)
class OptimSection(OptimConfig):
    """conf/optim: OptimConfig as the YAML writes it. warmup_steps null = warmup_ratio x
    train.max_steps; total_steps and use_distributed_optimizer are derived (never set)."""
    warmup_steps: int | None = None
    warmup_ratio: float | None = None


@dataclass(frozen=True)
class DebugSection:
    """conf/train.yaml `debug`: training.signals.FaultInjection's settings."""
    signal_at_step: int | None = None
    signal: str = "SIGTERM"


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


def _message(error: Exception) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def _typed(schema, section: str, values: dict) -> dict:
    """config_schema.typed, its errors as ConfigError."""
    try:
        return typed(schema, section, values)
    except (KeyError, ValueError) as error:
        raise ConfigError(_message(error)) from error


def build(cls, section: str, values: dict):
    """cls from config section `section`: typed by cls (unknown keys, wrong types), then
    constructed (cls's own checks); errors as ConfigError naming the key."""
    fields = _typed(cls, section, values)
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid `{section}`: {error}") from error


def _reference(section: ModelSection, objective: ObjectiveConfig) -> ReferenceMode:
    try:
        return resolve_reference_mode(objective, section.reference)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _model(section: ModelSection) -> ModelConfig:
    """The preset's (or the imported) shape with model.overrides typed by ModelConfig."""
    try:
        base = get_preset(section.preset) if section.preset is not None else \
            imported_model_config(section.init_from)
    except KeyError as error:
        raise ConfigError(f"model.preset: {error.args[0]}") from error
    except ImportedModelError as error:
        raise ConfigError(f"model.preset is null: {error}") from error
    fields = _typed(base, "model.overrides", section.overrides)
    try:
        return ModelConfig(**{**fields, "layer_spec": section.layer_spec})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid `model`: {error}") from error


def _optim(section: dict, max_steps: int, parallel: ParallelConfig) -> OptimConfig:
    """OptimConfig; warmup_steps (when not null) wins over warmup_ratio * max_steps."""
    for key in ("total_steps", "use_distributed_optimizer"):
        if key in section:
            raise ConfigError(f"optim.{key} is derived from train.max_steps / "
                              f"parallel.use_distributed_optimizer; do not set it")
    values = _typed(OptimSection, "optim", section)
    ratio = values.pop("warmup_ratio")
    if values["warmup_steps"] is None:
        if ratio is not None and not 0 <= ratio <= 1:
            raise ConfigError(f"optim.warmup_ratio must lie in [0, 1], got {ratio}")
        values["warmup_steps"] = int(round((ratio or 0.0) * max_steps))
    return build(OptimConfig, "optim", {**values, "total_steps": max_steps,
                                        "use_distributed_optimizer": parallel.use_distributed_optimizer})


def _fault(section: dict) -> FaultInjection:
    debug = DebugSection(**_typed(DebugSection, "debug", section))
    try:
        return FaultInjection(debug.signal_at_step, debug.signal)
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
    run = build(RunSettings, "run", _section(resolved, "run"))
    train = build(TrainSettings, "train", _section(resolved, "train"))
    model_section = build(ModelSection, "model", _section(resolved, "model"))
    model = _model(model_section)
    objective = build(ObjectiveConfig, "objective", _section(resolved, "objective"))
    reference = _reference(model_section, objective)
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
        raise ConfigError(_message(error)) from error
    if build_data and data.synthetic is None and not data.validation and not data.validation_fraction:
        raise ConfigError("training evaluates on a validation split: set data.validation (a file, "
                          "or the DatasetDict split data.validation_split) or data.validation_fraction")
    settings = Settings(
        run=run, train=train, model=model, init_from=model_section.init_from, objective=objective,
        robust=robust, reliability=reliability, parallel=parallel, data=data,
        optim=_optim(_section(resolved, "optim"), train.max_steps, parallel),
        checkpoint=build(CheckpointSettings, "checkpoint", _section(resolved, "checkpoint")),
        logging=build(LoggingSettings, "logging", _section(resolved, "logging")),
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
