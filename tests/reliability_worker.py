"""torchrun worker for tests/test_reliability.py: each rank sees its strided share of every global
batch, split over two micro-batches, and reduces over the world group at each step. Results are
written as float.hex strings so the test compares them with one process bit for bit."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState


def batches(steps=5, size=64, annotators=5):
    g = torch.Generator().manual_seed(1234)
    for _ in range(steps):
        yield torch.randint(0, annotators, (size,), generator=g), torch.rand(size, generator=g, dtype=torch.float64)


def snapshot(state):
    return {"eta": [v.hex() for v in state.eta.tolist()], "ids": state.index.ids(),
            "labels": state.labels_seen.tolist()}


CONFIG = ReliabilityConfig(eta0=0.9, alpha=0.1, prior_strength=2.0)
IDS = [f"annotator-{k}" for k in range(5)]


def main(out_dir: Path):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    sharded = ReliabilityState(CONFIG, AnnotatorIndex(IDS))
    for index, w in batches():
        # strided DP sharding, then two micro-batches per rank
        mine_index, mine_w = index[rank::world], w[rank::world]
        half = len(mine_index) // 2
        sharded.accumulate(mine_index[:half], mine_w[:half])
        sharded.accumulate(mine_index[half:], mine_w[half:])
        sharded.step(group=dist.group.WORLD)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(snapshot(sharded)))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
