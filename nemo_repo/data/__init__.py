"""Preference-data layer: files -> validated pairs -> tokens (cached) -> per-DP-rank micro-batches.

Entry point: nemo_repo.data.pipeline (DataConfig, build_data_config, PreferenceData).
Modules: readers (JSONL / JSON / Parquet / datasets folders / hub), validate (RowError, report),
tokenize (chat template or plain, truncation, cache), batch (PreferenceBatch, padded collation),
packing (packed collation, Collator), sampler (DP-sharded resumable order), synthetic (noisy-
annotator benchmark), assets (registry-shipped model and pairs). Kept import-free so that
`nemo_repo.data.batch` stays cheap to import for the model layer.
"""
