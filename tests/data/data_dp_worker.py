"""Worker for test_distributed: each rank builds PreferenceData (rank 0 fills the cache first)
and writes the pair indices of its micro-batches for a few steps and its evaluation share; with a
training file given, the DataValidationError each rank raises instead."""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from nemo_repo.data.pipeline import PreferenceData, build_data_config
from nemo_repo.data.validate import DataValidationError


def main(out: str, cache: str, train: str | None = None) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = build_data_config({"synthetic": {"n_train": 96, "n_validation": 10, "seed": 2},
                                "cache_dir": cache, "max_length": 16, "train": train, "strict": bool(train)})
    try:
        data = PreferenceData(config, micro_batch_size=2, global_batch_size=8, dp_rank=rank, dp_size=world)
    except DataValidationError as error:
        Path(out, f"rank{rank}.json").write_text(json.dumps({"error": str(error), "reason": error.error.reason}))
        dist.destroy_process_group()
        return
    steps = [[b.pair_index.tolist() for b in data.sampler.next_step()] for _ in range(3)]
    evaluation = [b.pair_index.tolist() for b in data.eval_batches("validation")]
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"steps": steps, "eval": evaluation, "cache": data.report.batching["cache"],
         "annotators": data.annotators.ids()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
