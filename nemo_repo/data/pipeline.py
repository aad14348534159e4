"""From the `data` config section to per-DP-rank micro-batches: the data layer's one entry point.

    config = build_data_config(cfg["data"])                    # DataConfig (validated)
    data = PreferenceData(config, micro_batch_size=2, global_batch_size=32, dp_rank=r, dp_size=dp)
    micro_batches = data.sampler.next_step()                   # list[PreferenceBatch], this rank
    data.eval_batches("validation")                            # this rank's share, lazily collated

Reading, validation and tokenization happen once and are cached on disk (tokenize.cached); when
torch.distributed is initialised, rank 0 prepares the cache first and the other ranks load it.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nemo_repo.config_schema import typed
from nemo_repo.data.assets import default_cache_dir
from nemo_repo.data.batch import PreferenceBatch
from nemo_repo.data.packing import Collator
from nemo_repo.data.readers import FORMATS, Source, read_source, row_kind
from nemo_repo.data.sampler import PreferenceSampler, StepPlan
from nemo_repo.data.synthetic import TRUTH_FILE, SyntheticConfig, load_truth, write_synthetic
from nemo_repo.data.tokenize import (PairEncoder, TokenizedSplit, TokenizeSettings, cache_key, cached,
                                     load_tokenizer, tokenize_examples, tokenizer_fingerprint)
from nemo_repo.data.validate import (FIELDS, TOO_FEW_PAIRS, DataReport, DataValidationError, SplitReport,
                                     file_error, require_pairs, validate_records)
from nemo_repo.files import new_directory
from nemo_repo.reliability import AnnotatorIndex

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class DataConfig:
    """The `data` config section (conf/data/*.yaml); see the README's data section."""
    train: str | None = None               # file / folder / hub name of the training pairs
    validation: str | None = None          # separate validation source, or ...
    validation_fraction: float = 0.0       # ... a seeded held-out share of `train`
    format: str = "auto"                   # auto | jsonl | json | parquet | hf_disk | hf_hub
    train_split: str = "train"             # split names inside a DatasetDict / hub dataset
    validation_split: str = "validation"
    columns: dict = field(default_factory=dict)   # validate.FIELDS name -> column (default: same name)
    tokenizer: str | None = None           # local HF tokenizer folder
    max_length: int = 1024                 # tokens per sequence (prompt + one response)
    truncation: str = "truncate"           # truncate | drop
    max_prompt_length: int | None = None   # truncate: prompt kept >= this (default max_length // 2)
    chat_template: str = "auto"            # auto (use the tokenizer's if it has one) | never
    append_eos: bool = True                # plain concatenation only
    strict: bool = False                   # raise on the first bad row, else skip and count
    max_skipped_fraction: float | None = None   # refuse data skipping more (per split); null: warn > 5%
    packing: bool = False
    pack_length: int | None = None         # packed row length (default 2 * max_length)
    pad_to_multiple_of: int = 8
    static_shapes: bool = False            # rows always max_length / pack_length long
    incomplete_batch: str = "drop"         # drop | wrap (the last partial global batch per epoch)
    seed: int = 1234                       # epoch shuffling and the held-out split
    cache_dir: str | None = None           # default $NEMO_REPO_CACHE or ~/.cache/nemo_repo
    truth: str | None = None               # truth.json (label correctness); default: next to train
    synthetic: dict | None = None          # SyntheticConfig fields: generate the benchmark instead

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got '{self.format}'")
        if self.max_skipped_fraction is not None and not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"data.max_skipped_fraction must lie in [0, 1] (or be null), "
                             f"got {self.max_skipped_fraction}")
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise ValueError(f"data.columns: unknown field(s) {unknown}; valid: {list(FIELDS)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"data.validation_fraction must lie in [0, 1), got {self.validation_fraction}")
        if self.validation and self.validation_fraction:
            raise ValueError("set either data.validation or data.validation_fraction, not both")
        if self.synthetic is None and (not self.train or not self.tokenizer):
            raise ValueError("data.train and data.tokenizer are required (or data.synthetic)")
        if self.synthetic is not None:
            SyntheticConfig(**self.synthetic)
        self.tokenize_settings()
        self.collator()

    @property
    def column_map(self) -> dict:
        return {name: self.columns.get(name, name) for name in FIELDS}

    def tokenize_settings(self) -> TokenizeSettings:
        return TokenizeSettings(self.max_length, self.truncation, self.chat_template, self.append_eos,
                                self.max_prompt_length)

    def collator(self) -> Collator:
        return Collator(self.packing, self.max_length, self.pack_length, self.pad_to_multiple_of,
                        self.static_shapes)


def build_data_config(section: dict) -> DataConfig:
    """DataConfig from the `data` section (a mapping), typed by DataConfig and data.synthetic by
    SyntheticConfig (config_schema.typed): an unknown key raises KeyError, a wrong type ValueError,
    each naming `data.<key>`."""
    values = typed(DataConfig, "data", section)
    if values["synthetic"] is not None:
        values["synthetic"] = typed(SyntheticConfig, "data.synthetic", values["synthetic"])
    return DataConfig(**values)


def materialize_synthetic(config: DataConfig) -> DataConfig:
    """Write the synthetic benchmark (cheap, deterministic) under the cache and point the config
    at it; explicit train/validation/tokenizer/truth settings win."""
    if config.synthetic is None:
        return config
    synthetic = SyntheticConfig(**config.synthetic)
    key = hashlib.sha256(json.dumps(dataclasses.asdict(synthetic), sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    folder = folder / "synthetic" / key
    if not (folder / TRUTH_FILE).is_file():   # written aside, then renamed: ranks may race
        with new_directory(folder) as tmp:
            write_synthetic(tmp, synthetic)
    return dataclasses.replace(
        config, synthetic=None, train=config.train or str(folder / "train.jsonl"),
        validation=config.validation or (None if config.validation_fraction else str(folder / "validation.jsonl")),
        tokenizer=config.tokenizer or str(folder / "tokenizer"),
        truth=config.truth or str(folder / TRUTH_FILE))


def _distributed():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def prepare_split(source: Source, config: DataConfig, encoder: PairEncoder, tokenizer_path: str,
                  cache_root: Path, reference: bool = False) -> tuple[TokenizedSplit, SplitReport, bool]:
    """Read + validate + tokenize one source, through the cache. Returns (split, report, hit).
    `reference`: read the precomputed reference sums (else those columns are ignored)."""
    key = cache_key(source.fingerprint(), tokenizer_fingerprint(tokenizer_path),
                    dataclasses.asdict(config.tokenize_settings()), config.column_map, config.strict,
                    reference)

    def build():
        report = SplitReport(files=[source.path])
        kind = row_kind(source.resolved_format())
        examples = validate_records(source.path, kind, read_source(source), config.column_map,
                                    report, config.strict, reference)
        split = tokenize_examples(examples, encoder, source.path, kind, config.column_map,
                                  report, config.strict)
        require_pairs(report)
        return split, report

    return cached(cache_root / "tokenized" / key, build)


def held_out(num_pairs: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): a seeded random `fraction`, each side in file order."""
    count = int(round(fraction * num_pairs))
    chosen = np.random.default_rng([seed, 7]).permutation(num_pairs)[:count]
    mask = np.zeros(num_pairs, dtype=bool)
    mask[chosen] = True
    return np.flatnonzero(~mask).tolist(), np.flatnonzero(mask).tolist()


class LazyBatches(Sequence):
    """Micro-batches collated on access (evaluation over a whole split without holding every
    attention mask in memory)."""

    def __init__(self, groups: list[list[int]], make):
        self.groups, self.make = groups, make

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.make(g) for g in self.groups[i]]
        return self.make(self.groups[i])


class TrainBatches:
    """The training stream: `next_step()` -> this rank's micro-batches (list[PreferenceBatch])
    of the next global batch; `last_plan` says which epoch/step it was and whether the epoch
    ended there (for reliability.end_epoch). state_dict/load_state_dict = the sampler's."""

    def __init__(self, data: "PreferenceData", sampler: PreferenceSampler):
        self.data, self.sampler = data, sampler
        self.last_plan: StepPlan | None = None

    def next_step(self) -> list[PreferenceBatch]:
        self.last_plan = self.sampler.next_step()
        return [self.data.collate("train", group) for group in self.last_plan.micro_batches]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class PreferenceData:
    """Both splits tokenized, the annotator index, the training stream and evaluation batches
    for one data-parallel rank.

    `annotators`: the AnnotatorIndex of every annotator id in the data, training ids in file order
    first, then validation-only ids; complete once constructed (size a ReliabilityState from it).
    Each pair's position in it is fixed here; the index is append-only, so restoring a checkpoint
    into it (ReliabilityState.load_state_dict) never moves them. `reference`: read and validate the
    precomputed reference sums (model.reference=precomputed); otherwise those columns are ignored.
    Every data problem raises DataValidationError (see validate.py), also the split-level ones
    checked here: a split without a valid pair, fewer training pairs than one global batch, more
    skipped rows than data.max_skipped_fraction (without it: a warning in the report above 5%)."""

    def __init__(self, config: DataConfig, micro_batch_size: int, global_batch_size: int,
                 dp_rank: int = 0, dp_size: int = 1, reference: bool = False):
        config = materialize_synthetic(config)
        self.config = config
        self.micro_batch_size, self.dp_rank, self.dp_size = micro_batch_size, dp_rank, dp_size
        self.collator = config.collator()
        self.report = DataReport()
        self.splits = self._prepare(config, reference)
        self._check_sizes(global_batch_size)
        self.report.check_skipped(config.max_skipped_fraction)
        self.annotators = AnnotatorIndex()
        self._annotator_index = {name: np.array([self.annotators.index(a) for a in split.annotator_ids],
                                                dtype=np.int64)
                                 for name, split in self.splits.items()}
        sampler = PreferenceSampler(len(self.splits["train"]), global_batch_size, micro_batch_size,
                                    dp_rank, dp_size, config.seed, config.incomplete_batch)
        self.sampler = TrainBatches(self, sampler)
        self.report.batching = self._batching_summary(sampler)
        self.truth = load_truth(config.truth) if config.truth else self._default_truth()   # or None

    # ---------------------------------------------------------------- preparation
    def _prepare(self, config: DataConfig, reference: bool) -> dict[str, TokenizedSplit]:
        tokenizer = load_tokenizer(config.tokenizer)
        self.tokenizer = tokenizer
        encoder = PairEncoder(tokenizer, config.tokenize_settings())
        cache_root = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
        sources = {"train": Source(config.train, config.format, config.train_split)}
        if config.validation:
            sources["validation"] = Source(config.validation, config.format, config.validation_split)

        def prepare_all():
            return {name: prepare_split(source, config, encoder, config.tokenizer, cache_root, reference)
                    for name, source in sources.items()}

        dist = _distributed()
        if dist is None:
            prepared = prepare_all()
        else:   # rank 0 fills the cache; the others then load it (or raise rank 0's error too)
            prepared, failure = {}, [None]
            if dist.get_rank() == 0:
                try:
                    prepared = prepare_all()
                except Exception as error:
                    failure = [error if isinstance(error, DataValidationError)
                               else f"{type(error).__name__}: {error}"]
                    dist.broadcast_object_list(failure, src=0)
                    raise
            dist.broadcast_object_list(failure, src=0)
            if isinstance(failure[0], DataValidationError):
                raise failure[0]
            if failure[0] is not None:
                raise RuntimeError(f"data preparation failed on rank 0: {failure[0]}")
            if dist.get_rank() != 0:
                prepared = prepare_all()
        splits = {}
        for name, (split, report, hit) in prepared.items():
            self.report.splits[name] = report
            report_cache = "hit" if hit else "miss"
            self.report.batching.setdefault("cache", {})[name] = report_cache
            splits[name] = split
        if config.validation_fraction:
            train_rows, validation_rows = held_out(len(splits["train"]), config.validation_fraction,
                                                   config.seed)
            full = splits["train"]
            splits["train"], splits["validation"] = full.subset(train_rows), full.subset(validation_rows)
            self.report.batching["held_out_validation_pairs"] = len(validation_rows)
        return splits

    def _check_sizes(self, global_batch_size: int) -> None:
        """At least one global batch of training pairs and one validation pair."""
        train = self.splits["train"]
        if len(train) < global_batch_size:
            raise file_error(train.file, TOO_FEW_PAIRS,
                             f"{len(train)} training pairs, fewer than one global batch of "
                             f"{global_batch_size} (parallel.global_batch_size)"
                             + (f" after holding out data.validation_fraction="
                                f"{self.config.validation_fraction}" if self.config.validation_fraction else "")
                             + f"; {self.report.splits['train'].summary()}")
        if "validation" in self.splits and not len(self.splits["validation"]):
            raise file_error(train.file, TOO_FEW_PAIRS,
                             f"data.validation_fraction={self.config.validation_fraction} of "
                             f"{len(train)} pairs holds out no pair: raise it")

    def _batching_summary(self, sampler: PreferenceSampler) -> dict:
        """Sampler counts and the padding fraction of epoch 0 (all ranks) either way."""
        lengths = self.splits["train"].lengths()
        groups = []
        for step in range(sampler.steps_per_epoch):
            batch = sampler.global_batch(0, step)
            groups += [lengths[batch[i:i + self.micro_batch_size]].tolist()
                       for i in range(0, len(batch), self.micro_batch_size)]
        return {**self.report.batching, **sampler.epoch_summary(),
                "packing": self.config.packing,
                "padding_fraction_padded": round(self.collator.padding_fraction(groups, False), 4),
                "padding_fraction_packed": round(self.collator.padding_fraction(groups, True), 4)}

    # ---------------------------------------------------------------- batches
    def collate(self, split: str, indices: Sequence[int]) -> PreferenceBatch:
        data, annotators = self.splits[split], self._annotator_index[split]
        return self.collator([data.pair(i, int(annotators[i]), i) for i in indices])

    def eval_batches(self, split: str = "validation", max_pairs: int | None = None) -> LazyBatches:
        """This rank's contiguous share of the split's first `max_pairs` pairs (all by default),
        in file order, as micro-batches (the last may be smaller; a rank may get none)."""
        if split not in self.splits:
            raise KeyError(f"no '{split}' split (set data.validation or data.validation_fraction)")
        n = len(self.splits[split]) if max_pairs is None else min(max_pairs, len(self.splits[split]))
        mine = np.array_split(np.arange(n), self.dp_size)[self.dp_rank].tolist()
        groups = [mine[i:i + self.micro_batch_size] for i in range(0, len(mine), self.micro_batch_size)]
        return LazyBatches(groups, lambda group: self.collate(split, group))

    # ---------------------------------------------------------------- per-pair metadata
    def has_reference(self, split: str) -> bool:
        """Do the split's rows carry precomputed reference sums (reference_chosen/_rejected)?"""
        return self.splits[split].reference is not None

    def pair_ids(self, split: str) -> list[str]:
        return list(self.splits[split].pair_ids)

    def annotator_indices(self, split: str) -> list[int]:
        """The dense annotator index (self.annotators) of every pair of the split, in order."""
        return self._annotator_index[split].tolist()

    def num_pairs(self, split: str) -> int:
        return len(self.splits[split])

    def label_correct(self, split: str) -> list[bool] | None:
        """Per pair: is the dataset's label the true preference? From truth.json; None without."""
        if self.truth is None:
            return None
        flipped = set(self.truth.get("flipped_ids" if split == "train" else "validation_flipped_ids", []))
        if split == "validation" and self.config.validation_fraction:
            flipped = set(self.truth.get("flipped_ids", []))
        return [pair_id not in flipped for pair_id in self.splits[split].pair_ids]

    def _default_truth(self) -> dict | None:
        candidate = Path(self.config.train).expanduser().parent / TRUTH_FILE
        return load_truth(candidate) if candidate.is_file() else None

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)
