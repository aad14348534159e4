"""Tokenization: chat template vs plain concatenation, loss masks, truncation policy, cache."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from nemo_repo.data.batch import TokenizedPair, collate_padded
from nemo_repo.data.readers import Source
from nemo_repo.data.tokenize import (PairEncoder, PairProblem, TokenizeSettings, cached, fit_length,
                                     tokenize_examples)
from nemo_repo.data.validate import DataValidationError, PreferenceExample, SplitReport

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
         "hello", "there", "good", "answer", "bad", "be", "kind", "a", "b", "c", "d", "e"]
TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|> {{ m.content }} <|end|> {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")
COLUMNS = {k: k for k in ("prompt", "chosen", "rejected", "annotator_id", "id")}


def make_tokenizer(template: bool):
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   chat_template=TEMPLATE if template else None)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def example(prompt, chosen, rejected, row=1):
    return PreferenceExample(prompt, chosen, rejected, None, None, row)


def completion_tokens(batch, sequence):
    """Tokens the loss mask selects (labels where loss_mask = 1) for one padded row."""
    mask = batch.loss_mask[sequence].bool()
    return batch.labels[sequence][mask].tolist()


@pytest.mark.parametrize("conversational", [False, True])
def test_chat_template_masks_exactly_the_prompt_tokens(conversational):
    tok = make_tokenizer(template=True)
    encoder = PairEncoder(tok, TokenizeSettings(max_length=64))
    assert encoder.use_template
    prompt = ([{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello there"}]
              if conversational else "hello there")
    pair = example(prompt, "good answer" if not conversational else
                   [{"role": "assistant", "content": "good answer"}], "bad")
    (prompt_ids, chosen_ids, rejected_ids), = encoder.encode([pair])
    system = "<|system|> be kind <|end|> " if conversational else ""
    assert prompt_ids == ids(tok, system + "<|user|> hello there <|end|> <|assistant|>")
    assert chosen_ids == ids(tok, "good answer <|end|>")      # end-of-turn is completion; no EOS added
    assert rejected_ids == ids(tok, "bad <|end|>")
    batch = collate_padded([TokenizedPair(prompt_ids, chosen_ids, rejected_ids, 0, 0)])
    assert completion_tokens(batch, 0) == chosen_ids
    assert completion_tokens(batch, 1) == rejected_ids
    assert int(batch.loss_mask.sum()) == len(chosen_ids) + len(rejected_ids)


def test_plain_concatenation_adds_bos_and_masked_eos():
    tok = make_tokenizer(template=False)
    encoder = PairEncoder(tok, TokenizeSettings(max_length=64))
    assert not encoder.use_template
    (p, c, r), = encoder.encode([example("hello there", " good answer", " bad")])
    assert p == [2] + ids(tok, "hello there")
    assert c == ids(tok, "good answer") + [3] and r == ids(tok, "bad") + [3]
    batch = collate_padded([TokenizedPair(p, c, r, 0, 0)])
    assert completion_tokens(batch, 0) == c                    # EOS is in the loss mask
    problem, = encoder.encode([example([{"role": "user", "content": "hello"}], "a", "b")])
    assert isinstance(problem, PairProblem) and problem.reason == "no_chat_template"


def test_truncation_cuts_prompt_left_then_responses_right():
    prompt, chosen, rejected = list(range(10, 20)), [1, 2, 3, 4], [5, 6]
    (p, c, r), cut = fit_length(prompt, chosen, rejected, 12, "truncate")
    assert (p, c, r, cut) == (prompt[2:], chosen, rejected, ["prompt"])
    (p, c, r), cut = fit_length(prompt, chosen, rejected, 4, "truncate")
    assert (p, c, r, cut) == ([19], [1, 2, 3], [5, 6], ["prompt", "chosen"])
    (p, c, r), cut = fit_length(prompt, chosen, rejected, 8, "truncate", prompt_floor=5)
    assert (p, c, r, cut) == (prompt[5:], [1, 2, 3], [5, 6], ["prompt", "chosen"])
    assert fit_length(prompt, chosen, rejected, 14, "drop") == ((prompt, chosen, rejected), [])


def test_counts_and_errors_per_policy():
    tok = make_tokenizer(template=False)
    rows = [example("hello there", " good", " bad", row=1),
            example("a b c d e a b c d e", " good answer", " bad", row=2),
            example("a b c d e a b c d e", " good", " good answer", row=3)]
    report = SplitReport()
    split = tokenize_examples(rows, PairEncoder(tok, TokenizeSettings(max_length=8)), "f.jsonl",
                              "line", COLUMNS, report, strict=False)
    assert len(split) == 3 and report.pairs_kept == 3
    assert dict(report.truncated) == {"prompt": 2, "pairs": 2}
    # drop policy: the two long rows are errors naming file, row and the longer field
    report = SplitReport()
    split = tokenize_examples(rows, PairEncoder(tok, TokenizeSettings(max_length=8, truncation="drop")),
                              "f.jsonl", "line", COLUMNS, report, strict=False)
    assert len(split) == 1 and report.skipped == {"too_long": 2}
    assert [(e.row, e.field) for e in report.errors] == [(2, "chosen"), (3, "rejected")]
    assert "f.jsonl, line 2, field 'chosen'" in str(report.errors[0])
    with pytest.raises(DataValidationError, match="line 2.*max_length 8"):
        tokenize_examples(rows, PairEncoder(tok, TokenizeSettings(max_length=8, truncation="drop")),
                          "f.jsonl", "line", COLUMNS, SplitReport(), strict=True)
    # identical after truncation is caught as well
    report = SplitReport()
    tokenize_examples([example("a", " good answer c d", " good answer c d e")],
                      PairEncoder(tok, TokenizeSettings(max_length=5)), "f", "line", COLUMNS, report, False)
    assert report.skipped == {"identical_responses": 1}


def test_rows_that_cannot_be_rendered_or_encoded_are_named_not_fatal():
    """A text the tokenizer rejects (here a lone surrogate, which validation normally stops
    first) and a conversational row without a chat template: row errors, the rest is kept."""
    tok = make_tokenizer(template=False)
    rows = [example("hello", " good", " bad", row=1), example("hello \ud800", " good", " bad", row=2),
            example([{"role": "user", "content": "hello"}], "a", "b", row=3), example("a", " b", " c", row=4)]
    report = SplitReport()
    split = tokenize_examples(rows, PairEncoder(tok, TokenizeSettings()), "f.jsonl", "line", COLUMNS,
                              report, strict=False)
    assert split.rows == [1, 4] and report.skipped == {"tokenizer_error": 1, "no_chat_template": 1}
    assert str(report.errors[0]).startswith("f.jsonl, line 2: the tokenizer raised TypeError")
    assert str(report.errors[1]).startswith("f.jsonl, line 3, field 'prompt': a conversational row needs")
    with pytest.raises(DataValidationError, match="f.jsonl, line 2: the tokenizer raised"):
        tokenize_examples(rows, PairEncoder(tok, TokenizeSettings()), "f.jsonl", "line", COLUMNS,
                          SplitReport(), strict=True)


def test_cache_roundtrip(tmp_path):
    tok = make_tokenizer(template=False)
    calls = []

    def build():
        calls.append(1)
        report = SplitReport(files=["f"])
        split = tokenize_examples([example("hello", " good", " bad")],
                                  PairEncoder(tok, TokenizeSettings()), "f", "line", COLUMNS, report, False)
        return split, report

    first, report, hit = cached(tmp_path / "k", build)
    second, report2, hit2 = cached(tmp_path / "k", build)
    assert (hit, hit2, len(calls)) == (False, True, 1)
    assert second.pair(0, 3, 0) == first.pair(0, 3, 0)
    assert report2.to_dict() == report.to_dict()
    assert json.loads((tmp_path / "k" / "meta.json").read_text())["pair_ids"] == ["f:1"]
    assert Source(str(tmp_path / "k" / "meta.json")).fingerprint() != ""
