"""Two DP ranks under torchrun: one tokenization (rank 0), the same global batches as one process;
rank 0's data error raised on every rank."""

import json

import pytest

from nemo_repo.data.pipeline import PreferenceData, build_data_config
from tests.dist import REPO_ROOT, run_workers

WORKER = REPO_ROOT / "tests" / "data" / "data_dp_worker.py"


@pytest.mark.distributed
def test_two_ranks_share_the_cache_and_split_each_global_batch(tmp_path):
    cache = tmp_path / "cache"
    run_workers(WORKER, 2, [tmp_path, cache], timeout=120)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["cache"] == {"train": "miss", "validation": "miss"}   # rank 0 tokenized
    assert ranks[1]["cache"] == {"train": "hit", "validation": "hit"}     # rank 1 loaded it
    assert ranks[0]["annotators"] == ranks[1]["annotators"]
    config = build_data_config({"synthetic": {"n_train": 96, "n_validation": 10, "seed": 2},
                                "cache_dir": str(cache), "max_length": 16})
    single = PreferenceData(config, micro_batch_size=2, global_batch_size=8)
    for step in range(3):
        whole = [i for b in single.sampler.next_step() for i in b.pair_index.tolist()]
        assert [i for r in ranks for mb in r["steps"][step] for i in mb] == whole
    assert [i for r in ranks for mb in r["eval"] for i in mb] == list(range(10))


@pytest.mark.distributed
def test_a_data_error_on_rank_0_is_raised_on_every_rank(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1 + 2 =", "chosen": " 3", "rejected": " 4"}\n'
                   '{"prompt": "1 + 1 =", "chosen": 2, "rejected": " 3"}\n')
    run_workers(WORKER, 2, [tmp_path, tmp_path / "cache", bad], timeout=120)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected = f"{bad}, line 2, field 'chosen': expected a string or a list of messages, got int [wrong_type]"
    assert ranks[0] == ranks[1] == {"error": expected, "reason": "wrong_type"}
