"""train.final_pass end to end (tiny runs, fp32, CPU): last_visit (the default) scores every
visited training pair with the Delta of its last training step and the final eta, says how many
were never visited, and matches a full final pass when the policy does not move; none writes no
pair_weights.jsonl."""

import json

import pytest

from nemo_repo.training import outputs
from tests.training.runs import ok, records, tiny, train

# SimPO (no reference) with an LR too small to move the policy: every pair's Delta at its visit is
# the final policy's, so the last-visit w must equal the full pass's. 16 pairs, 2 steps: one epoch.
STILL = ["objective=simpo", "optim.lr=1e-12", "optim.min_lr=0", "data.synthetic.n_train=16",
         "train.max_steps=2", "checkpoint.interval=0"]


def weights(run_dir):
    return outputs.read_records(run_dir / outputs.PAIR_WEIGHTS_FILE)


def reliability(run_dir):
    return json.loads((run_dir / outputs.RELIABILITY_FILE).read_text())


def test_last_visit_w_is_the_posterior_of_the_last_visit_delta_with_the_final_eta(tmp_path):
    cache = tmp_path / "cache"
    full, last = tmp_path / "full", tmp_path / "last"
    ok(train(tiny(full, cache, *STILL, "train.final_pass=full")))
    ok(train(tiny(last, cache, *STILL, "train.final_pass=last_visit")))
    expected, got = weights(full), weights(last)
    assert len(got) == 16 and [r["id"] for r in got] == [r["id"] for r in expected]
    assert [r["annotator_id"] for r in got] == [r["annotator_id"] for r in expected]
    assert [r["w"] for r in got] == pytest.approx([r["w"] for r in expected], abs=1e-5)
    # the final refit (tiny_cpu's reliability.final_refit) ran on the same Deltas
    assert [r["eta"] for r in reliability(last)] == pytest.approx([r["eta"] for r in reliability(full)],
                                                                  abs=1e-5)


def test_last_visit_reports_the_pairs_never_visited(tmp_path):
    run_dir = tmp_path / "run"
    done = ok(train(tiny(run_dir, tmp_path / "cache", "train.final_pass=last_visit", "checkpoint.interval=0")))
    rows = weights(run_dir)                  # 4 steps of 8 pairs: half of the 64 pairs
    assert len(rows) == 64 and len({r["id"] for r in rows}) == 64
    scored = [r for r in rows if r["w"] is not None]
    assert len(scored) == 32 and all(0.0 <= r["w"] <= 1.0 for r in scored)
    assert "32 of 64 training pairs were never visited" in done.stdout
    annotators = reliability(run_dir)
    assert sum(r["labels"] for r in annotators) == 64
    for row in annotators:
        mine = [r["w"] for r in scored if r["annotator_id"] == row["annotator_id"]]
        assert row["mean_w"] == (pytest.approx(sum(mine) / len(mine)) if mine else None)
    assert [r["step"] for r in records(run_dir) if r["split"] == "eval"] == [2, 4]   # once at the end


def test_final_pass_none_writes_no_pair_weights(tmp_path):
    run_dir = tmp_path / "run"
    ok(train(tiny(run_dir, tmp_path / "cache", "train.final_pass=none", "reliability.final_refit=false",
                  "train.max_steps=1", "checkpoint.interval=0")))
    assert not (run_dir / outputs.PAIR_WEIGHTS_FILE).exists()
    assert all(r["mean_w"] is None and r["labels"] > 0 for r in reliability(run_dir))
