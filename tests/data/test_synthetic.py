"""Synthetic noisy-annotator benchmark: reproducible, flip rates match eta*, truth kept aside."""

import json
import math

import pytest

from nemo_repo.data.synthetic import SyntheticConfig, generate, generate_splits, write_synthetic


def correct(row) -> bool:
    a, _, b, _ = row["prompt"].split()
    return int(row["chosen"]) == int(a) + int(b)


def test_reproducible_from_the_seed():
    config = SyntheticConfig(n_train=600, n_validation=50, seed=3)
    assert generate(config) == generate(config)
    assert generate(config)[0] != generate(SyntheticConfig(n_train=600, n_validation=50, seed=4))[0]


def test_flip_rates_match_eta_within_sampling_error():
    config = SyntheticConfig(n_train=4000, seed=11)
    train, validation, truth = generate(config)
    flipped = set(truth["flipped_ids"])
    for k, name in enumerate(config.annotator_ids):
        rows = [r for r in train if r["annotator_id"] == name]
        assert len(rows) == round(config.proportions[k] * config.n_train)      # unequal, exact counts
        flips = sum(not correct(r) for r in rows)
        assert flips == sum(r["id"] in flipped for r in rows) == truth["annotators"][name]["num_flipped"]
        p = 1 - config.etas[k]
        bound = 4 * math.sqrt(p * (1 - p) / len(rows)) + 1 / len(rows)       # 4-sigma binomial
        assert abs(flips / len(rows) - p) <= bound, (name, flips / len(rows), p)
        assert truth["annotators"][name]["realised_eta"] == pytest.approx(1 - flips / len(rows))
    assert all(correct(r) for r in validation)                                 # clean split
    assert all(r["rejected"] != r["chosen"] for r in train + validation)


def test_written_files_hide_the_truth_and_load_with_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    paths = write_synthetic(tmp_path, SyntheticConfig(n_train=100, n_validation=10))
    rows = [json.loads(line) for line in open(paths["train"])]
    assert all(set(r) == {"id", "prompt", "chosen", "rejected", "annotator_id"} for r in rows)
    truth = json.loads(open(paths["truth"]).read())
    assert set(truth) == {"task", "config", "annotators", "flipped_ids", "validation_flipped_ids",
                          "test_flipped_ids", "realised_flip_rate", "prompts", "eval_prompts_seen_in_train"}
    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    assert len(tok) <= 320 and tok.eos_token == "[EOS]"
    assert tok.decode(tok("3 + 4 =").input_ids + tok(" 7", add_special_tokens=False).input_ids,
                      skip_special_tokens=True) == "3 + 4 = 7"
    assert "[UNK]" not in tok.convert_ids_to_tokens(tok(" ".join(r["prompt"] + r["chosen"] for r in rows)).input_ids)


def test_config_checks():
    with pytest.raises(ValueError, match="equal length"):
        SyntheticConfig(etas=(0.9,), proportions=(0.5, 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        SyntheticConfig(proportions=(0.5, 0.3, 0.1, 0.05))


COPY = dict(task="copy", length=3, n_train=3000, n_validation=100, n_test=150, seed=5)


def test_copy_task_holds_out_validation_and_test_prompts():
    splits, truth = generate_splits(SyntheticConfig(**COPY))
    prompts = {split: {r["prompt"] for r in rows} for split, rows in splits.items()}
    assert len(splits["validation"]) == len(prompts["validation"]) == 100      # one pair per prompt
    assert len(splits["test"]) == len(prompts["test"]) == 150
    assert not prompts["train"] & prompts["validation"] and not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    assert truth["eval_prompts_seen_in_train"] == {"validation": 0, "test": 0}
    assert truth["test_flipped_ids"] == [] and truth["prompts"]["test"] == 150
    flipped = set(truth["flipped_ids"])
    for split, rows in splits.items():
        for r in rows:
            digits = r["prompt"].removesuffix(" =")
            right, wrong = (r["rejected"], r["chosen"]) if r["id"] in flipped else (r["chosen"], r["rejected"])
            assert right == " " + digits                                          # the copy is right
            changed = [a != b for a, b in zip(right.split(), wrong.split())]
            assert len(wrong.split()) == 3 and sum(changed) == 1                 # one digit differs
    assert truth["realised_flip_rate"] == pytest.approx(len(flipped) / 3000)


def test_copy_memorisation_pool_and_size_checks(tmp_path):
    splits, truth = generate_splits(SyntheticConfig(**{**COPY, "train_prompts": 40}))
    assert truth["prompts"]["train"] <= 40 and len(splits["train"]) == 3000      # ~75 pairs / prompt
    with pytest.raises(ValueError, match="train_prompts"):
        SyntheticConfig(**{**COPY, "train_prompts": 1000})                      # only 750 left
    with pytest.raises(ValueError, match="copy only"):
        SyntheticConfig(train_prompts=10)
    paths = write_synthetic(tmp_path, SyntheticConfig(**COPY))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    rows = [json.loads(line) for line in open(paths["test"])]
    text = " ".join(r["prompt"] + r["chosen"] + r["rejected"] for r in rows)
    assert "[UNK]" not in tok.convert_ids_to_tokens(tok(text).input_ids) and len(tok) == 16
