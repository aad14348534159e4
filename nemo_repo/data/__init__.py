"""Preference-data layer: readers, validation, tokenization, batching, sampling, synthetic data."""
