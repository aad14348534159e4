"""Training checkpoints with megatron.core.dist_checkpointing: atomic, resumable, re-shardable.

Layout of a checkpoint root (`checkpoint.dir`, default `<run.dir>/checkpoints`):

    step_00000040/            one complete checkpoint (a dist_checkpointing directory)
        COMPLETE              completion marker (JSON: step, time); written before the rename
        metadata.json, common.pt, *.distcp, ...   dist_checkpointing files
    .tmp_step_00000050/       a save in progress (or killed): never read, removed by the next save
    .damaged_step_00000030/   complete but failed to load on resume: set aside, never read again

Sharded entries (re-shardable across TP/PP/DP layouts unless noted):
    model          the GPTModel's sharded_state_dict()   (the model-weights format, model/weights.py)
    optimizer      optimizer.sharded_state_dict(model, is_loading=...) (distributed optimizer:
                   "fully_reshardable" format)
    reliability    ReliabilityState.state_dict()          (eta + annotator index, one copy)
    rng_state      per-rank RNG states (python, numpy, torch, cuda, megatron tracker); restored
                   only when the layout (TP, PP, DP) is unchanged, otherwise re-seeded
Common entries (saved once by rank 0): `step`, `layout`, and whatever the caller passes in
`common` (the loop stores scheduler, sampler and the resolved config: `saved_init_from` reads it).

A directory without COMPLETE is ignored; `latest_checkpoint` picks the highest complete step;
`load_newest_loadable` (resume) falls back to older ones when the newest does not load.
Rank-0-only steps (directory creation, marker + rename + prune) go through
`nemo_repo.ranks.on_rank_zero`: if they fail, every rank raises at once.
"""

import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from torch.distributed.checkpoint.api import CheckpointException

from nemo_repo.device import is_cuda
from nemo_repo.model.weights import save_sharded, single_chunk
from nemo_repo.ranks import barrier, first_failure, on_rank_zero, rank

MARKER = "COMPLETE"
# Distributed-optimizer state in the layout-independent format (TP/PP/DP may change on resume);
# ignored by the regular optimizer.
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}
PREFIX = "step_"
TMP_PREFIX = ".tmp_step_"
DAMAGED_PREFIX = ".damaged_step_"


class CheckpointError(RuntimeError):
    """Complete checkpoints exist, but none of them loads."""


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def complete_checkpoints(root) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(PREFIX) and (path / MARKER).is_file():
            try:
                found.append((int(path.name[len(PREFIX):]), path))
            except ValueError:
                continue
    return sorted(found)


def latest_checkpoint(root) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def current_layout() -> dict:
    return {"tp": parallel_state.get_tensor_model_parallel_world_size(),
            "pp": parallel_state.get_pipeline_model_parallel_world_size(),
            "dp": parallel_state.get_data_parallel_world_size()}


def _rng_object(data) -> ShardedObject:
    """Per-rank RNG states, one shard per (pp, tp, dp) coordinate."""
    layout = current_layout()
    return ShardedObject(
        "rng_state", data, (layout["pp"], layout["tp"], layout["dp"]),
        (parallel_state.get_pipeline_model_parallel_rank(),
         parallel_state.get_tensor_model_parallel_rank(),
         parallel_state.get_data_parallel_rank()), replica_id=0)


def _replicated_object(key: str, data) -> ShardedObject:
    """One layout-independent copy (rank 0 writes it, every rank reads it)."""
    return ShardedObject(key, data, (1,), (0,), replica_id=rank())


def capture_rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if is_cuda() else None,
            "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and is_cuda():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _sharded_state(model, optimizer, reliability, rng, is_loading: bool) -> dict:
    state = {"model": model.sharded_state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(state["model"], is_loading=is_loading,
                                                          metadata=OPTIMIZER_METADATA)
    if reliability is not None:
        state["reliability"] = _replicated_object("reliability", reliability.state_dict())
    if rng is not None:
        state["rng_state"] = _rng_object(rng)
    return state


def save_checkpoint(root, step: int, model_chunks, optimizer=None, reliability=None,
                    common: dict | None = None, keep_last: int = 0) -> Path:
    """Collective: write checkpoint `step` atomically under `root`; keep the newest `keep_last`
    complete ones (0 = keep all). Returns the final directory."""
    root = Path(root)
    final, tmp = root / step_dir_name(step), root / f"{TMP_PREFIX}{step:08d}"
    on_rank_zero(_fresh_directory, tmp)
    state = _sharded_state(single_chunk(model_chunks), optimizer, reliability,
                           capture_rng_state(), is_loading=False)
    state.update(common or {})
    state.update(step=step, layout=current_layout())
    save_sharded(state, tmp)
    barrier()
    on_rank_zero(_publish, tmp, final, step, keep_last)
    return final


def _fresh_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _publish(tmp: Path, final: Path, step: int, keep_last: int) -> None:
    """Mark the written checkpoint complete, move it to its final name, prune older ones."""
    marker = tmp / MARKER
    marker.write_text(json.dumps({"step": step, "time": time.time()}))
    with open(marker) as handle:
        os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _prune(final.parent, keep_last)


def _prune(root: Path, keep_last: int) -> None:
    for path in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
    if keep_last > 0:
        for _, path in complete_checkpoints(root)[:-keep_last]:
            shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(directory, model_chunks, optimizer=None, reliability=None) -> dict:
    """Collective: restore model, optimizer, reliability and (same layout only) RNG states from
    `directory`; return the checkpoint's common entries (step, layout, the caller's `common`)."""
    directory = Path(directory)
    if not (directory / MARKER).is_file():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no {MARKER} marker)")
    common = dist_checkpointing.load_common_state_dict(str(directory))
    same_layout = common.get("layout") == current_layout()
    model = single_chunk(model_chunks)
    state = _sharded_state(model, optimizer, reliability, capture_rng_state() if same_layout else None,
                           is_loading=True)
    loaded = dist_checkpointing.load(state, str(directory))
    model.load_state_dict(loaded["model"])
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if reliability is not None:
        reliability.load_state_dict(loaded["reliability"])
    if same_layout:
        restore_rng_state(loaded["rng_state"])
    return {key: value for key, value in loaded.items()
            if key not in ("model", "optimizer", "reliability", "rng_state")}


def load_newest_loadable(root, model_chunks, optimizer=None, reliability=None) -> tuple[Path, dict] | None:
    """Collective: load the newest complete checkpoint under `root` that loads on every rank
    (load_checkpoint); returns (its directory, its common entries), or None when there is none.

    Every rank tries the same directories (rank 0's listing) and they agree after each try: one
    that fails on any rank (a truncated or unreadable shard, marker present) is skipped by all,
    reported in one line and renamed `.damaged_step_XXXXXXXX` (kept for inspection, out of the
    resume and `keep_last` rotation); the next older one is tried. Raises CheckpointError when
    complete checkpoints exist but none loads."""
    skipped = []
    for _, directory in reversed(on_rank_zero(complete_checkpoints, root)):
        try:
            common, error = load_checkpoint(directory, model_chunks, optimizer, reliability), None
        except (Exception, CheckpointException) as exc:   # the latter is a BaseException
            error = _one_line(exc)
        failure = first_failure(error)
        if failure is None:
            return directory, common
        damaged = on_rank_zero(_set_aside, directory)
        if rank() == 0:
            print(f"warning: checkpoint {directory} does not load ({failure}); skipped, moved to "
                  f"{damaged.name}", flush=True)
        skipped.append(f"{directory.name} ({failure})")
    if skipped:
        raise CheckpointError(f"no checkpoint under {root} loads: {'; '.join(skipped)}")
    return None


def _one_line(error: Exception) -> str:
    """The root cause of a load failure in one line (a torch.distributed.checkpoint
    CheckpointException carries every rank's traceback: keep the first rank's exception)."""
    failures = getattr(error, "failures", None)
    if isinstance(failures, dict) and failures:
        error = failures[min(failures)][0]
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _set_aside(directory: Path) -> Path:
    target = directory.parent / f"{DAMAGED_PREFIX}{directory.name[len(PREFIX):]}"
    shutil.rmtree(target, ignore_errors=True)
    os.replace(directory, target)
    return target


def saved_init_from(directory) -> str | None:
    """The `model.init_from` recorded in the config of the training checkpoint `directory`
    (None: none recorded, or not a training checkpoint)."""
    directory = Path(directory)
    if not (directory / "metadata.json").is_file():
        return None
    try:
        common = dist_checkpointing.load_common_state_dict(str(directory))
    except Exception:  # not a dist_checkpointing directory: reported by the caller
        return None
    config = common.get("config") if isinstance(common, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    return model.get("init_from") if isinstance(model, dict) else None
