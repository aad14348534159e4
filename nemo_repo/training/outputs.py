"""End-of-run files in the run directory (written by global rank 0).

reliability.json    [{"annotator_id": str, "eta": float, "labels": int, "scored": int,
                      "mean_w": float|null}, ...]
                    one entry per annotator: final eta, number of training pairs it labelled, how many
                    of them have a w (fewer than labels with final_pass=last_visit when some were
                    never visited; 0 with none), and the mean posterior w of those (null if none has)
pair_weights.jsonl  {"id": str, "annotator_id": str, "w": float|null} per training pair, in split
                    order: the posterior w = sigma(s * Delta + logit(eta_k)) with the final eta (and
                    E-step scale s, reliability.calibrate; s = 1 otherwise; in robust modes other than
                    re, eta stays at eta0: the same score, a fixed prior). Which Delta, by
                    train.final_pass (FinalPass):
                      last_visit  (default) the pair's Delta at its last training visit: the policy of
                                  that step, before its update (training/last_visit.py); free, but
                                  pairs seen early in the last epoch are scored by an older policy.
                                  A pair never visited (max_steps shorter than an epoch) has w null;
                                  the run prints how many
                      full        a forward pass of the final policy (and reference) over every
                                  training pair after the last step
                      none        no pair_weights.jsonl (reliability.json has mean_w null)
eval.json           final validation figures {"step": int, "loss": ..., "reward_accuracy": ..., ...}
"""

import json
import math
from enum import Enum
from pathlib import Path

import torch

from nemo_repo.files import atomic_file

RELIABILITY_FILE = "reliability.json"
PAIR_WEIGHTS_FILE = "pair_weights.jsonl"
EVAL_FILE = "eval.json"


class FinalPass(str, Enum):
    """train.final_pass: where the Delta of pair_weights.jsonl comes from (module docstring)."""
    LAST_VISIT = "last_visit"
    FULL = "full"
    NONE = "none"


def merge_pairs(per_pair: dict) -> dict:
    """StepRunner.evaluate's per-pair tensors -> lists (same keys) with one row per
    pair_index (a DP sampler may repeat pairs to even out shards), sorted."""
    columns = {key: values.tolist() for key, values in per_pair.items()}
    first = {}
    for position, index in enumerate(columns["pair_index"]):
        first.setdefault(index, position)
    order = [first[index] for index in sorted(first)]
    return {key: [values[position] for position in order] for key, values in columns.items()}


def pair_weight_rows(pairs: dict, pair_ids, annotator_ids) -> list[dict]:
    """Rows of pair_weights.jsonl from merged per-pair lists (w: float, or None for a pair
    without one: never visited, or final_pass none)."""
    if any(w is not None and math.isnan(w) for w in pairs["w"]):
        raise ValueError("pair weights need the pass's posterior w (evaluate with a ReliabilityState)")
    return [{"id": str(pair_ids[index]), "annotator_id": annotator_ids[k],
             "w": None if w is None else float(w)}
            for index, k, w in zip(pairs["pair_index"], pairs["annotator_index"], pairs["w"])]


def reliability_rows(annotator_ids, eta, pair_rows: list[dict]) -> list[dict]:
    """Rows of reliability.json: eta per annotator, its label count in `pair_rows`, how many of
    those rows have a w, and the mean of their w."""
    sums, counts, scored = {}, {}, {}
    for row in pair_rows:
        name = row["annotator_id"]
        counts[name] = counts.get(name, 0) + 1
        if row["w"] is not None:
            sums[name] = sums.get(name, 0.0) + row["w"]
            scored[name] = scored.get(name, 0) + 1
    eta = torch.as_tensor(eta, dtype=torch.float64).tolist()
    return [{"annotator_id": name, "eta": eta[k], "labels": counts.get(name, 0),
             "scored": scored.get(name, 0), "mean_w": sums[name] / scored[name] if name in scored else None}
            for k, name in enumerate(annotator_ids)]


def write_json(path, payload) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_records(path) -> list[dict]:
    """The rows of a JSONL file this module wrote ([] when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_records(path, rows) -> None:
    """`rows` as a JSONL file (what read_records reads back)."""
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows), encoding="utf-8")


def write_run_outputs(run_dir, pairs: dict, pair_ids, annotator_ids, eta, eval_metrics: dict,
                      pair_weights: bool = True) -> None:
    """Write reliability.json, pair_weights.jsonl (unless not `pair_weights`) and eval.json (call
    on rank 0 only). `pairs`: merged lists {pair_index, annotator_index, w} of every training pair."""
    run_dir = Path(run_dir)
    rows = pair_weight_rows(pairs, pair_ids, annotator_ids)
    if pair_weights:
        write_records(run_dir / PAIR_WEIGHTS_FILE, rows)
    write_json(run_dir / RELIABILITY_FILE, reliability_rows(annotator_ids, eta, rows))
    write_json(run_dir / EVAL_FILE, eval_metrics)
