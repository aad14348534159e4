"""nemo_repo/ranks.py: rank-0-only work whose failure every rank raises at once (2 gloo ranks),
and the single-process fallbacks."""

import json

import pytest

from nemo_repo import ranks
from tests.dist import REPO_ROOT, run_workers


@pytest.mark.distributed
def test_rank_zero_work_is_shared_and_its_failure_raised_on_every_rank(tmp_path):
    run_workers(REPO_ROOT / "tests" / "ranks_worker.py", 2, [tmp_path], timeout=90)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # success: the work ran once, on rank 0, and every rank got its result
    assert rank0["ok"]["value"] == rank1["ok"]["value"] == {"rank": 0, "size": len("written")}
    # failure: rank 0 raises its own error, rank 1 at once a RankZeroError naming it
    assert rank0["fails"]["error"] == "FileNotFoundError"
    assert rank1["fails"]["error"] == "RankZeroError"
    assert rank1["fails"]["message"].startswith("rank 0 failed: FileNotFoundError:")
    assert "missing/file.txt" in rank1["fails"]["message"] and rank1["fails"]["seconds"] < 10
    # first_failure: the same answer on every rank
    assert rank0["all_succeed"] is None and rank1["all_succeed"] is None
    assert rank0["rank1_fails"] == rank1["rank1_fails"] == "rank 1: disk full"


def test_a_world_of_one_runs_the_work_and_raises_its_own_error(tmp_path):
    assert ranks.rank() == 0
    assert ranks.on_rank_zero(lambda x: x + 1, 1) == 2
    with pytest.raises(ZeroDivisionError):
        ranks.on_rank_zero(lambda: 1 / 0)
    assert ranks.first_failure("bad") == "bad" and ranks.first_failure(None) is None
    ranks.barrier()
