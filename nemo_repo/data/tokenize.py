"""Tokenization of validated pairs, truncation policy, and the on-disk cache of tokenized splits.

Sequence = prompt tokens + completion tokens; only completion tokens carry loss (batch.py).
* With a chat template (tokenizer has one and chat_template="auto"): prompt text = the template
  over the prompt turns with the generation prompt; full text = the template over prompt +
  response turns; completion text = full text minus the prompt text (so it holds the
  end-of-turn tokens the template writes, e.g. "<|im_end|>\n"; nothing is appended). Plain
  prompts become one user turn, plain responses one assistant turn.
* Without one (plain rows only): prompt tokens = tokenizer(prompt) with its special tokens (BOS
  when the tokenizer adds one); completion = tokenizer(response) without special tokens, plus EOS
  when append_eos (then the loss mask covers the EOS). Texts are concatenated as given: put the
  separating space/newline in the data (" 7", "\\nAnswer").
Truncation (max_length bounds each sequence, prompt + response): "truncate" cuts the prompt from
the left first, but not below max_prompt_length tokens (default max_length // 2, so a long
response cannot erase the prompt), then both responses from the right; "drop" skips the pair as
a `too_long` error. Every cut is counted in the SplitReport. A row that cannot be rendered or
tokenized (conversational without a chat template, a template that raises or does not render the
prompt as a prefix, a tokenizer error) is a RowError as well, naming its file and row.
Precomputed reference log-prob sums (optional row columns) are carried through as given: they are
only valid for the token sequences they were computed on, i.e. the same tokenizer and these same
truncation settings (recipes/precompute_reference.py records both; training checks them).
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nemo_repo.data.batch import TokenizedPair
from nemo_repo.files import new_directory
from nemo_repo.data.validate import (EMPTY_FIELD, IDENTICAL_RESPONSES, NO_CHAT_TEMPLATE, TEMPLATE_ERROR,
                                     NOT_FOUND, TEMPLATE_MISMATCH, TOKENIZER_ERROR, TOO_LONG, UNREADABLE,
                                     DataValidationError, PreferenceExample, RowError, SplitReport,
                                     file_error)

CACHE_VERSION = 2          # 2: precomputed reference sums (reference.npy)
ENCODE_CHUNK = 1024        # rows per batched tokenizer call
TRUNCATION = ("truncate", "drop")
TEMPLATE_MODES = ("auto", "never")
_TOKENIZER_FILES = ("tokenizer", "vocab", "merges", "special_tokens_map", "added_tokens",
                    "chat_template", "spiece", "sentencepiece")


@dataclass(frozen=True)
class TokenizeSettings:
    max_length: int = 1024
    truncation: str = "truncate"
    chat_template: str = "auto"
    append_eos: bool = True
    max_prompt_length: int | None = None    # truncation floor for the prompt; None = max_length // 2

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"data.max_length must be >= 2, got {self.max_length}")
        if self.max_prompt_length is not None and not 1 <= self.max_prompt_length < self.max_length:
            raise ValueError(f"data.max_prompt_length must lie in [1, max_length), got {self.max_prompt_length}")
        if self.truncation not in TRUNCATION:
            raise ValueError(f"data.truncation must be one of {TRUNCATION}, got '{self.truncation}'")
        if self.chat_template not in TEMPLATE_MODES:
            raise ValueError(f"data.chat_template must be one of {TEMPLATE_MODES}, got '{self.chat_template}'")

    @property
    def prompt_floor(self) -> int:
        return self.max_prompt_length or max(self.max_length // 2, 1)


def load_tokenizer(path: str):
    """The Hugging Face tokenizer in the local folder `path` (data.tokenizer); DataValidationError
    naming it when it is missing or holds no loadable tokenizer (never a hub download)."""
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise file_error(path, NOT_FOUND, "data.tokenizer must be a local tokenizer folder; this one "
                         "does not exist")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:   # transformers raises OSError / ValueError / KeyError / ...
        raise file_error(path, UNREADABLE, f"data.tokenizer: no loadable tokenizer in this folder: "
                         f"{type(error).__name__}: {error}") from None


def tokenizer_fingerprint(path: str) -> str:
    """Hash of the tokenizer's own files in `path` (not the model weights next to them)."""
    digest = hashlib.sha256()
    folder = Path(path).expanduser()
    for file in sorted(folder.iterdir()) if folder.is_dir() else [folder]:
        if file.is_file() and (file.name.lower().startswith(_TOKENIZER_FILES) or file.suffix == ".model"):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


class PairProblem(ValueError):
    """Why one pair cannot be encoded or fitted: (logical field or None, reason, detail)."""

    def __init__(self, field_name: str | None, reason: str, detail: str):
        super().__init__(detail)
        self.field, self.reason, self.detail = field_name, reason, detail


class PairEncoder:
    """Turns PreferenceExamples into untruncated (prompt, chosen, rejected) token lists."""

    def __init__(self, tokenizer, settings: TokenizeSettings):
        self.tokenizer = tokenizer
        self.settings = settings
        self.use_template = settings.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))
        self.eos = tokenizer.eos_token_id if settings.append_eos and not self.use_template else None
        if settings.append_eos and not self.use_template and self.eos is None:
            raise ValueError("data.append_eos is set but the tokenizer defines no eos_token")

    def _render(self, messages: list[dict], **options) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, **options)
        except Exception as error:   # templates raise what they like (jinja TemplateError, ...)
            raise PairProblem("prompt", TEMPLATE_ERROR, f"the chat template raised "
                              f"{type(error).__name__}: {error}") from None

    def _template_texts(self, example: PreferenceExample) -> tuple[str, str, str]:
        prompt = (example.prompt if example.conversational
                  else [{"role": "user", "content": example.prompt}])
        prompt_text = self._render(prompt, add_generation_prompt=True)
        completions = []
        for name in ("chosen", "rejected"):
            response = getattr(example, name)
            if isinstance(response, str):
                response = [{"role": "assistant", "content": response}]
            full = self._render(prompt + response)
            if not full.startswith(prompt_text):
                raise PairProblem(name, TEMPLATE_MISMATCH,
                                  "the chat template does not render the prompt turns as a prefix of "
                                  "the conversation, so prompt and completion cannot be separated "
                                  "(plain rows with data.chat_template=never avoid the template)")
            completions.append(full[len(prompt_text):])
        return prompt_text, completions[0], completions[1]

    def texts(self, example: PreferenceExample) -> tuple[str, str, str]:
        """(prompt, chosen, rejected) texts; PairProblem when the row cannot be rendered."""
        if self.use_template:
            return self._template_texts(example)
        if example.conversational:
            raise PairProblem("prompt", NO_CHAT_TEMPLATE,
                              "a conversational row needs a tokenizer with a chat template "
                              "(data.chat_template=auto and tokenizer.chat_template set)")
        return example.prompt, example.chosen, example.rejected

    def encode_texts(self, texts: Sequence[tuple[str, str, str]]) -> list[tuple[list[int], list[int], list[int]]]:
        if not texts:
            return []
        encode = self.tokenizer
        prompts = encode([t[0] for t in texts], add_special_tokens=not self.use_template)["input_ids"]
        chosen = encode([t[1] for t in texts], add_special_tokens=False)["input_ids"]
        rejected = encode([t[2] for t in texts], add_special_tokens=False)["input_ids"]
        tail = [self.eos] if self.eos is not None else []
        return [(list(p), list(c) + tail, list(r) + tail) for p, c, r in zip(prompts, chosen, rejected)]

    def encode(self, examples: Sequence[PreferenceExample]) -> list:
        """Per example: its token lists, or the PairProblem that stops it. One batched tokenizer
        call; when that raises, the texts are encoded one by one to find the row at fault."""
        texts = []
        for example in examples:
            try:
                texts.append(self.texts(example))
            except PairProblem as problem:
                texts.append(problem)
        good = [t for t in texts if not isinstance(t, PairProblem)]
        try:
            encoded = iter(self.encode_texts(good))
        except Exception:   # tokenizers raise TypeError / their own errors on odd text
            encoded = iter([self._encode_one(t) for t in good])
        return [t if isinstance(t, PairProblem) else next(encoded) for t in texts]

    def _encode_one(self, text: tuple[str, str, str]):
        try:
            return self.encode_texts([text])[0]
        except Exception as error:
            return PairProblem(None, TOKENIZER_ERROR, f"the tokenizer raised {type(error).__name__}: {error}")


def fit_length(prompt: list[int], chosen: list[int], rejected: list[int], max_length: int,
               truncation: str, prompt_floor: int = 1) -> tuple[tuple[list[int], list[int], list[int]], list[str]]:
    """Apply the truncation policy; returns the fitted lists and the parts cut. Raises
    PairProblem (policy "drop") when a sequence is longer than max_length."""
    longest = len(prompt) + max(len(chosen), len(rejected))
    if longest <= max_length:
        return (prompt, chosen, rejected), []
    if truncation == "drop":
        name = "chosen" if len(chosen) >= len(rejected) else "rejected"
        raise PairProblem(name, TOO_LONG, f"prompt + {name} is {longest} tokens, more than "
                                          f"max_length {max_length} (truncation=drop)")
    cut = []
    prompt_cut = min(longest - max_length, len(prompt) - max(prompt_floor, 1))
    if prompt_cut > 0:
        prompt, cut = prompt[prompt_cut:], ["prompt"]
    room = max_length - len(prompt)
    for name, tokens in (("chosen", chosen), ("rejected", rejected)):
        if len(tokens) > room:
            cut.append(name)
    return (prompt, chosen[:room], rejected[:room]), cut


@dataclass
class TokenizedSplit:
    """Token ids of one split as flat arrays + offsets, with ids and source rows per pair and,
    when the rows carry them, the precomputed reference sums ([N, 2] float64: chosen, rejected)."""
    prompt: np.ndarray; prompt_offsets: np.ndarray
    chosen: np.ndarray; chosen_offsets: np.ndarray
    rejected: np.ndarray; rejected_offsets: np.ndarray
    annotator_ids: list            # str or None per pair
    pair_ids: list                 # str per pair (given id, else "<file>:<row>")
    rows: list                     # source row per pair
    file: str
    reference: np.ndarray | None = None

    _ARRAYS = ("prompt", "prompt_offsets", "chosen", "chosen_offsets", "rejected", "rejected_offsets")

    def __len__(self) -> int:
        return len(self.pair_ids)

    @classmethod
    def from_lists(cls, triples, annotator_ids, pair_ids, rows, file,
                   reference=None) -> "TokenizedSplit":
        arrays = {}
        for k, name in enumerate(("prompt", "chosen", "rejected")):
            parts = [t[k] for t in triples]
            arrays[name] = np.fromiter((x for part in parts for x in part), dtype=np.int64)
            arrays[f"{name}_offsets"] = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        if reference is not None:
            reference = np.asarray(reference, dtype=np.float64).reshape(len(triples), 2)
        return cls(**arrays, annotator_ids=list(annotator_ids), pair_ids=list(pair_ids),
                   rows=list(rows), file=file, reference=reference)

    def _part(self, name: str, i: int) -> list[int]:
        offsets = getattr(self, f"{name}_offsets")
        return getattr(self, name)[offsets[i]:offsets[i + 1]].tolist()

    def pair(self, i: int, annotator_index: int, pair_index: int) -> TokenizedPair:
        reference = (None, None) if self.reference is None else map(float, self.reference[i])
        return TokenizedPair(self._part("prompt", i), self._part("chosen", i), self._part("rejected", i),
                             annotator_index, pair_index, *reference)

    def lengths(self) -> np.ndarray:
        """[N, 2] token counts of the chosen and rejected sequences."""
        prompt = np.diff(self.prompt_offsets)
        return np.stack([prompt + np.diff(self.chosen_offsets), prompt + np.diff(self.rejected_offsets)], 1)

    def subset(self, indices: Sequence[int]) -> "TokenizedSplit":
        triples = [(self._part("prompt", i), self._part("chosen", i), self._part("rejected", i))
                   for i in indices]
        return TokenizedSplit.from_lists(triples, [self.annotator_ids[i] for i in indices],
                                         [self.pair_ids[i] for i in indices],
                                         [self.rows[i] for i in indices], self.file,
                                         None if self.reference is None else self.reference[list(indices)])

    def save(self, folder: Path, report: SplitReport) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))
        if self.reference is not None:
            np.save(folder / "reference.npy", self.reference)
        meta = {"annotator_ids": self.annotator_ids, "pair_ids": self.pair_ids, "rows": self.rows,
                "file": self.file, "report": report.to_dict()}
        (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> tuple["TokenizedSplit", SplitReport]:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in cls._ARRAYS}
        reference = folder / "reference.npy"
        split = cls(**arrays, annotator_ids=meta["annotator_ids"], pair_ids=meta["pair_ids"],
                    rows=meta["rows"], file=meta["file"],
                    reference=np.load(reference) if reference.is_file() else None)
        return split, SplitReport.from_dict(meta["report"])


def tokenize_examples(examples: Sequence[PreferenceExample], encoder: PairEncoder, file: str,
                      row_kind: str, columns: dict, report: SplitReport, strict: bool) -> TokenizedSplit:
    """Encode + fit every example; too-long (drop) and post-truncation problems are RowErrors."""
    settings = encoder.settings
    triples, kept = [], []
    encoded_rows = (encoded for start in range(0, len(examples), ENCODE_CHUNK)
                    for encoded in encoder.encode(examples[start:start + ENCODE_CHUNK]))
    for example, encoded in zip(examples, encoded_rows):
        error = None
        try:
            if isinstance(encoded, PairProblem):
                raise encoded
            (prompt, chosen, rejected), cut = fit_length(*encoded, settings.max_length, settings.truncation,
                                                         settings.prompt_floor)
            if not prompt or not chosen or not rejected:
                name = "prompt" if not prompt else "chosen" if not chosen else "rejected"
                error = RowError(file, example.row, row_kind, columns[name], EMPTY_FIELD,
                                 "tokenizes to zero tokens")
            elif chosen == rejected:
                error = RowError(file, example.row, row_kind, columns["rejected"], IDENTICAL_RESPONSES,
                                 "identical to chosen after tokenization/truncation")
        except PairProblem as problem:
            error = RowError(file, example.row, row_kind, problem.field and columns[problem.field],
                             problem.reason, problem.detail)
        if error is not None:
            if strict:
                raise DataValidationError(error)
            report.add_error(error)
            continue
        for part in cut:
            report.truncated[part] += 1
        if cut:
            report.truncated["pairs"] += 1
        triples.append((prompt, chosen, rejected))
        kept.append(example)
    report.pairs_kept = len(kept)
    has_reference = bool(kept) and kept[0].reference_chosen is not None   # all or none (validate.py)
    return TokenizedSplit.from_lists(
        triples, [e.annotator_id for e in kept],
        [e.pair_id if e.pair_id is not None else default_pair_id(file, e.row) for e in kept],
        [e.row for e in kept], file,
        [(e.reference_chosen, e.reference_rejected) for e in kept] if has_reference else None)


def default_pair_id(file, row: int) -> str:
    """The id of a pair whose row has none: "<file name>:<row>"."""
    return f"{Path(file).name}:{row}"


def cache_key(*parts) -> str:
    payload = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cached(folder: Path, build) -> tuple[TokenizedSplit, SplitReport, bool]:
    """Load the split cached in `folder`, or build() it and save it there atomically (several
    ranks may race: the first rename wins, the others drop their copy). Returns (.., hit)."""
    if (folder / "meta.json").is_file():
        return (*TokenizedSplit.load(folder), True)
    split, report = build()
    with new_directory(folder) as tmp:
        split.save(tmp, report)
    return split, report, False

