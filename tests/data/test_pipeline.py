"""Config -> PreferenceData -> per-rank micro-batches, end to end on the synthetic benchmark."""

import json

import pytest
import torch

from nemo_repo.data.pipeline import PreferenceData, build_data_config, held_out
from recipes.prepare_data import main as prepare_data

SYNTHETIC = {"n_train": 200, "n_validation": 30, "seed": 1}


def make(tmp_path, rank=0, dp=1, mbs=2, gbs=8, **extra):
    section = {"synthetic": SYNTHETIC, "cache_dir": str(tmp_path / "cache"), "max_length": 16, **extra}
    return PreferenceData(build_data_config(section), mbs, gbs, dp_rank=rank, dp_size=dp)


def rows_of(data):
    return {json.loads(line)["id"]: json.loads(line) for line in open(data.config.train)}


def test_ranks_get_their_share_with_matching_metadata(tmp_path):
    ranks = [make(tmp_path, rank, 2) for rank in range(2)]
    whole = make(tmp_path, 0, 1)
    assert whole.report.batching["cache"] == {"train": "hit", "validation": "hit"}
    steps = [[d.sampler.next_step() for _ in range(3)] for d in (*ranks, whole)]
    rows = rows_of(whole)
    for step in range(3):
        merged = [int(i) for d in (0, 1) for b in steps[d][step] for i in b.pair_index]
        assert merged == [int(i) for b in steps[2][step] for i in b.pair_index]
        for batch in steps[0][step]:
            assert len(batch.pair_index) == 2 and batch.tokens.shape[0] == 4
            for j, i in enumerate(batch.pair_index.tolist()):
                row = rows[whole.pair_ids("train")[i]]
                assert whole.annotators.ids()[int(batch.annotator_index[j])] == row["annotator_id"]
                completion = batch.labels[2 * j][batch.loss_mask[2 * j].bool()]
                assert whole.tokenizer.decode(completion, skip_special_tokens=True).strip() == row["chosen"].strip()
    assert sorted(whole.annotators.ids()) == [f"annotator_{k}" for k in range(4)]


def test_truth_labels_eval_shares_and_report(tmp_path):
    data = make(tmp_path, 1, 3, mbs=4, gbs=12)
    rows = rows_of(data)
    truth = json.load(open(data.config.truth))
    correct = data.label_correct("train")
    assert sum(not c for c in correct) == len(truth["flipped_ids"])
    assert all(correct[i] == (pid not in truth["flipped_ids"]) for i, pid in enumerate(data.pair_ids("train")))
    assert all(data.label_correct("validation"))
    shares = [make(tmp_path, r, 3, mbs=4, gbs=12).eval_batches("validation") for r in range(3)]
    seen = sorted(int(i) for s in shares for b in s for i in b.pair_index)
    assert seen == list(range(30))
    assert len(make(tmp_path, 0, 3, mbs=4, gbs=12).eval_batches("train", max_pairs=10)[0].pair_index) == 4
    summary = data.report.batching
    assert summary["steps_per_epoch"] == 16 and summary["dropped_per_epoch"] == 8
    assert 0 <= summary["padding_fraction_packed"] < 1 and len(rows) == 200
    assert "200 pairs kept" in str(data.report)


def test_packing_and_held_out_split(tmp_path):
    padded = make(tmp_path, validation_fraction=0.25, validation=None)
    packed = make(tmp_path, validation_fraction=0.25, validation=None, packing=True)
    assert len(padded.splits["train"]) == 150 and len(padded.splits["validation"]) == 50
    train_ids, validation_ids = set(padded.pair_ids("train")), set(padded.pair_ids("validation"))
    assert not train_ids & validation_ids
    a, b = padded.sampler.next_step(), packed.sampler.next_step()
    assert [x.pair_index.tolist() for x in a] == [x.pair_index.tolist() for x in b]
    assert b[0].tokens.shape[0] < a[0].tokens.shape[0] and b[0].tokens.shape[1] == 32
    assert torch.equal(b[0].loss_mask.sum(), a[0].loss_mask.sum())
    assert held_out(100, 0.1, 3) == held_out(100, 0.1, 3) != held_out(100, 0.1, 4)


def test_bad_config_keys_and_values_are_named():
    with pytest.raises(KeyError, match="data.trian"):
        build_data_config({"trian": "x.jsonl", "tokenizer": "t"})
    with pytest.raises(ValueError, match="data.truncation"):
        build_data_config({"train": "x.jsonl", "tokenizer": "t", "truncation": "cut"})
    with pytest.raises(ValueError, match="data.columns"):
        build_data_config({"train": "x.jsonl", "tokenizer": "t", "columns": {"answer": "a"}})
    with pytest.raises(ValueError, match="pack_length"):
        build_data_config({"train": "x.jsonl", "tokenizer": "t", "max_length": 64, "pack_length": 100})


def test_prepare_data_cli(tmp_path, capsys):
    out = tmp_path / "bench"
    assert prepare_data(["synthetic", "--out", str(out), "--n-train", "64", "--n-validation", "8"]) == 0
    assert (out / "truth.json").is_file() and (out / "tokenizer" / "tokenizer.json").is_file()
    broken = tmp_path / "broken.jsonl"
    broken.write_text(open(out / "train.jsonl").read() + '{"prompt": "1 + 1 =", "chosen": " 2"}\n')
    common = ["check", "--train", str(broken), "--tokenizer", str(out / "tokenizer"),
              "--cache-dir", str(tmp_path / "cache"), "--max-length", "16"]
    assert prepare_data(common + ["--strict"]) == 2
    assert f"{broken}, line 65, field 'rejected'" in capsys.readouterr().err
    report = tmp_path / "report.json"
    assert prepare_data(common + ["--report-json", str(report)]) == 0
    assert json.load(open(report))["splits"]["train"]["skipped"] == {"missing_field": 1}
    assert prepare_data(common + ["--max-length", "1"]) == 2


def test_a_checkpoint_saved_with_another_annotator_order_attaches_each_pair_to_its_own_eta(tmp_path):
    """Resume as the trainer does: the data fixes each pair's annotator position, the state is
    sized from the data's index and restored from a checkpoint whose index lists the annotators in
    another order (plus one the current data lacks)."""
    from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState

    data = make(tmp_path)
    ids = data.annotators.ids()
    saved_order = [*reversed(ids), "retired"]
    saved_eta = {name: 0.1 + 0.15 * k for k, name in enumerate(saved_order)}
    saved = ReliabilityState(ReliabilityConfig(), AnnotatorIndex(saved_order))
    saved.eta = torch.tensor([saved_eta[name] for name in saved_order], dtype=torch.float64)

    state = ReliabilityState(ReliabilityConfig(), data.annotators)
    state.load_state_dict(saved.state_dict())
    rows = rows_of(data)
    checked = 0
    for batch in data.sampler.next_step():
        eta = state.eta_for(batch.annotator_index)
        for j, i in enumerate(batch.pair_index.tolist()):
            annotator = rows[data.pair_ids("train")[i]]["annotator_id"]
            assert eta[j].item() == pytest.approx(saved_eta[annotator])
            checked += 1
    assert checked == 8 and data.annotators.ids()[:len(ids)] == ids
