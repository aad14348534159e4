"""Precomputed reference log-prob sums (model.reference=precomputed) and their provenance.

`precompute_reference(settings, out)` scores every pair of the train and validation splits with the
reference model exactly as training builds it (the weights of model.init_from, or the seeded init)
and writes, under `out`:

  train.jsonl, validation.jsonl  the rows each split kept, as read, plus reference_chosen /
                                 reference_rejected (completion log-prob sums of the tokenized,
                                 possibly truncated sequences; column names via data.columns) and
                                 an id where a row had none (the pipeline's default, so pair ids
                                 and truth.json stay valid);
  truth.json                     the ground truth of those pairs, when the data has one;
  reference_logps.json           what the sums depend on (PROVENANCE_FILE, below).

The sums are only valid for the same token sequences and the same reference weights: a training
run with model.reference=precomputed whose data.train lies next to a PROVENANCE_FILE that lists it
checks the model shape, init_from (or run.seed without one), the tokenizer files and the
tokenization settings against it (`check_provenance`).
"""

import dataclasses
import json
from pathlib import Path

from nemo_repo.data.pipeline import SPLITS, PreferenceData, materialize_synthetic
from nemo_repo.data.readers import Source, read_source
from nemo_repo.data.synthetic import TRUTH_FILE
from nemo_repo.data.tokenize import tokenizer_fingerprint
from nemo_repo.training.outputs import merge_pairs, write_json

PROVENANCE_FILE = "reference_logps.json"
_NAMES = {"model": "model shape (model.preset / model.overrides)", "init_from": "model.init_from",
          "seed": "run.seed (seeded init, no model.init_from)",
          "tokenizer_fingerprint": "the tokenizer files (data.tokenizer)", "tokenize": "data"}


def _resolved(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def provenance(settings, data_config) -> dict:
    """What the reference sums depend on: the reference weights and the tokenized sequences
    (`data_config` materialized: a real tokenizer path)."""
    return {"model": dataclasses.asdict(settings.model),
            "init_from": _resolved(settings.init_from),
            "seed": None if settings.init_from else settings.run.seed,
            "tokenizer_fingerprint": tokenizer_fingerprint(data_config.tokenizer),
            "tokenize": dataclasses.asdict(data_config.tokenize_settings())}


def _differences(recorded: dict, current: dict) -> list[str]:
    found = []
    for key, value in current.items():
        before = recorded.get(key)
        if isinstance(value, dict):
            before = before if isinstance(before, dict) else {}
            found += [f"{'data' if key == 'tokenize' else 'model'}.{name}: {before.get(name)!r} "
                      f"then, {value.get(name)!r} now"
                      for name in sorted(set(value) | set(before)) if value.get(name) != before.get(name)]
        elif value != before:
            found.append(f"{_NAMES[key]}: {before!r} then, {value!r} now"
                         if key != "tokenizer_fingerprint" else f"{_NAMES[key]} differ")
    return found


def check_provenance(settings) -> None:
    """Raise ValueError when data.train has a PROVENANCE_FILE next to it that lists it and that
    records other settings than `settings` (nothing to check otherwise)."""
    if settings.data.train is None:
        return
    data = materialize_synthetic(settings.data)
    train = Path(data.train).expanduser()
    sidecar = train.parent / PROVENANCE_FILE
    if not train.is_file() or not sidecar.is_file():
        return
    recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    if train.name not in recorded.get("files", {}).values():
        return
    differences = _differences(recorded, provenance(settings, data))
    if differences:
        raise ValueError(f"{sidecar} records other settings than this run's: {'; '.join(differences)}")


def _plain(value):
    """json.dumps fallback for values of Parquet / datasets rows (numpy scalars and arrays)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def write_precomputed(out: Path, data: PreferenceData, scores: dict, settings) -> dict:
    """Write the rows of every scored split with their sums, truth.json and PROVENANCE_FILE
    (last: its presence marks a complete output). `scores[split]` is merge_pairs(...) of it."""
    config = data.config
    columns = config.column_map
    sources = {config.train: Source(config.train, config.format, config.train_split)}
    if config.validation:
        sources[config.validation] = Source(config.validation, config.format, config.validation_split)
    out.mkdir(parents=True, exist_ok=True)
    (out / PROVENANCE_FILE).unlink(missing_ok=True)   # an older run's record must not vouch for these
    files, pairs = {}, {}
    for split, score in scores.items():
        tokenized = data.splits[split]
        if score["pair_index"] != list(range(len(tokenized))):
            raise RuntimeError(f"{split}: {len(score['pair_index'])} of {len(tokenized)} pairs scored")
        wanted = {row: i for i, row in enumerate(tokenized.rows)}
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row, record in read_source(sources[tokenized.file]):
                i = wanted.get(row)
                if i is None:
                    continue
                record = dict(record)
                record[columns["reference_chosen"]] = score["chosen_logp"][i]
                record[columns["reference_rejected"]] = score["rejected_logp"][i]
                if record.get(columns["id"]) is None:
                    record[columns["id"]] = tokenized.pair_ids[i]
                handle.write(json.dumps(record, ensure_ascii=False, default=_plain) + "\n")
        files[split], pairs[split] = f"{split}.jsonl", len(tokenized)
    if data.truth is not None:
        flipped = {split: [pair_id for pair_id, ok in zip(data.pair_ids(split), data.label_correct(split))
                           if not ok] for split in scores}
        write_json(out / TRUTH_FILE, {**data.truth, "flipped_ids": flipped.get("train", []),
                                      "validation_flipped_ids": flipped.get("validation", [])})
    record = {"files": files, "pairs": pairs,
              "sources": {split: data.splits[split].file for split in scores},
              "tokenizer": config.tokenizer, **provenance(settings, config)}
    write_json(out / PROVENANCE_FILE, record)
    return record


def precompute_reference(settings, out) -> dict | None:
    """Collective (every rank of the layout): score both splits with the reference model, write
    the files on global rank 0; returns the provenance record on every rank."""
    from megatron.core import parallel_state

    from nemo_repo.model.parallel import destroy_parallel, initialize_parallel
    from nemo_repo.model.policy import build_reference
    from nemo_repo.model.preference import CompletionScorer
    from nemo_repo.ranks import on_rank_zero
    from nemo_repo.model.weights import load_model_weights
    from nemo_repo.training.step import score_pairs

    initialize_parallel(settings.parallel, settings.model, seed=settings.run.seed,
                        device=settings.run.device)
    try:
        chunks = build_reference(settings.model, settings.parallel, seed=settings.run.seed)
        if settings.init_from:
            load_model_weights(settings.init_from, chunks)
        scorer = CompletionScorer(chunks, settings.model)   # forward-only, eval mode
        data = PreferenceData(settings.data, settings.parallel.micro_batch_size,
                              settings.parallel.global_batch_size,
                              parallel_state.get_data_parallel_rank(),
                              parallel_state.get_data_parallel_world_size())
        scores = {split: score_pairs(scorer, data.eval_batches(split)) for split in SPLITS
                  if split in data.splits}
        # per-pair scores are gathered on rank 0; if writing fails, every rank raises at once
        return on_rank_zero(lambda: write_precomputed(
            Path(out), data, {split: merge_pairs(per_pair) for split, per_pair in scores.items()},
            settings))
    finally:
        destroy_parallel()
