"""Synthetic noisy-annotator benchmarks with K annotators of known reliability.

Two tasks (`task`):
- "copy" (the default recipe's): repeat a string of `length` digits, "3 1 4 1 =" -> " 3 1 4 1",
  the wrong answer having one digit replaced. The 10^length prompts are split once, by the seed,
  into disjoint validation, test and training prompt pools: validation and test accuracy measure
  GENERALISATION to prompts never seen in training. `train_prompts` caps the training pool: a
  small pool seen for many epochs is the memorisation regime (the model can fit every flipped
  label), a large one the large-data regime. (Two-digit addition written digit by digit was
  tried first: a 4-layer model trained by DPO alone from scratch stayed at chance for 300 steps.)
- "addition": small-number addition "a + b =" -> " a+b" with one token per number and the wrong
  sum moved by 1-3. Every split draws from the same (max_operand + 1)^2 = 100 prompts, so its
  validation accuracy measures fit, not generalisation; kept as a cheap, fast-converging check of
  reliability recovery (most tests use it).

Annotator k labels a fixed share of the training pairs and flips each of its labels independently
with probability 1 - eta*_k; validation and test are clean (no flips).

Files written (`write_synthetic`): train.jsonl, validation.jsonl and (when n_test > 0) test.jsonl in
the plain user format (prompt / chosen / rejected / annotator_id / id), tokenizer/ (a word-level HF
tokenizer folder loadable with AutoTokenizer), truth.json (the ground truth; never part of the rows).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nemo_repo.data.validate import CORRUPT_FILE, file_error
from nemo_repo.files import atomic_file

TRUTH_FILE = "truth.json"
TASKS = ("addition", "copy")


@dataclass(frozen=True)
class SyntheticConfig:
    n_train: int = 4000
    n_validation: int = 500
    max_operand: int = 9
    etas: tuple[float, ...] = (0.95, 0.85, 0.70, 0.55)
    proportions: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    seed: int = 0
    task: str = "addition"             # addition | copy (held-out prompts)
    n_test: int = 0                    # clean test pairs (copy: on their own held-out prompts)
    train_prompts: int | None = None   # copy: size of the training prompt pool (None = all left)
    length: int = 4                    # copy: digits per prompt (10^length prompts)

    def __post_init__(self):
        object.__setattr__(self, "etas", tuple(float(e) for e in self.etas))
        object.__setattr__(self, "proportions", tuple(float(p) for p in self.proportions))
        if len(self.etas) != len(self.proportions) or not self.etas:
            raise ValueError(f"etas ({len(self.etas)}) and proportions ({len(self.proportions)}) "
                             f"must be non-empty and of equal length")
        if not all(0.0 <= e <= 1.0 for e in self.etas):
            raise ValueError(f"etas must lie in [0, 1], got {self.etas}")
        if any(p < 0 for p in self.proportions) or abs(sum(self.proportions) - 1.0) > 1e-6:
            raise ValueError(f"proportions must be >= 0 and sum to 1, got {self.proportions}")
        if self.n_train < 1 or self.n_validation < 0 or self.n_test < 0 or self.max_operand < 1:
            raise ValueError("n_train >= 1, n_validation >= 0, n_test >= 0 and max_operand >= 1 are required")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "copy":
            if not 2 <= self.length <= 8:
                raise ValueError(f"task copy needs length in [2, 8], got {self.length}")
            pool = 10 ** self.length - self.n_validation - self.n_test
            if pool < 1 or (self.train_prompts is not None and not 1 <= self.train_prompts <= pool):
                raise ValueError(f"task copy: {10 ** self.length} prompts leave {pool} for "
                                 f"training after {self.n_validation} validation and {self.n_test} test "
                                 f"prompts; train_prompts={self.train_prompts} must lie in [1, {pool}]")
        elif self.train_prompts is not None:
            raise ValueError("train_prompts applies to task copy only")

    @property
    def annotator_ids(self) -> list[str]:
        return [f"annotator_{k}" for k in range(len(self.etas))]


def _counts(total: int, proportions) -> list[int]:
    """Exact label counts per annotator (largest remainder), summing to `total`."""
    raw = [p * total for p in proportions]
    counts = [int(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda k: (counts[k] - raw[k], k))
    for k in by_remainder[:total - sum(counts)]:
        counts[k] += 1
    return counts


def _addition_pair(rng: np.random.Generator, max_operand: int) -> tuple[str, str, str]:
    a, b = (int(x) for x in rng.integers(0, max_operand + 1, size=2))
    right = a + b
    wrong = right
    while wrong == right or not 0 <= wrong <= 2 * max_operand:
        wrong = right + int(rng.choice([-3, -2, -1, 1, 2, 3]))
    return f"{a} + {b} =", f" {right}", f" {wrong}"


def _copy_pair(rng: np.random.Generator, prompt: int, length: int) -> tuple[str, str, str]:
    digits = [int(d) for d in str(prompt).zfill(length)]
    wrong = list(digits)
    position = int(rng.integers(length))
    wrong[position] = (digits[position] + int(rng.integers(1, 10))) % 10
    return (" ".join(map(str, digits)) + " =", " " + " ".join(map(str, digits)),
            " " + " ".join(map(str, wrong)))


def _pair_makers(config: SyntheticConfig, rng: np.random.Generator) -> dict:
    """Per split, a function rng -> (prompt, right, wrong). copy: disjoint prompt pools, the
    evaluation splits one pair per prompt in pool order, training drawn with replacement."""
    if config.task == "addition":
        return {split: lambda r: _addition_pair(r, config.max_operand)
                for split in ("train", "validation", "test")}
    prompts = rng.permutation(10 ** config.length)
    pools = {"validation": prompts[:config.n_validation],
             "test": prompts[config.n_validation:config.n_validation + config.n_test]}
    train_pool = prompts[config.n_validation + config.n_test:]
    pools["train"] = train_pool[:config.train_prompts] if config.train_prompts else train_pool
    counters = {split: iter(pool.tolist()) for split, pool in pools.items() if split != "train"}

    def train_pair(r):
        return _copy_pair(r, int(r.choice(pools["train"])), config.length)

    makers = {"train": train_pair}
    for split in ("validation", "test"):
        makers[split] = lambda r, split=split: _copy_pair(r, next(counters[split]), config.length)
    return makers


def _clean_rows(rng, make, split: str, n: int, ids: list[str]) -> list[dict]:
    rows = []
    for i in range(n):
        prompt, right, wrong = make(rng)
        rows.append({"id": f"{split}-{i:06d}", "prompt": prompt, "chosen": right, "rejected": wrong,
                     "annotator_id": ids[int(rng.integers(len(ids)))]})
    return rows


def generate(config: SyntheticConfig) -> tuple[list[dict], list[dict], dict]:
    """(train rows, validation rows, truth) — a pure function of `config` (`generate_splits`
    also returns the test rows)."""
    splits, truth = generate_splits(config)
    return splits["train"], splits["validation"], truth


def generate_splits(config: SyntheticConfig) -> tuple[dict[str, list[dict]], dict]:
    """({split: rows} for train, validation and (n_test > 0) test, truth) — a pure function of `config`."""
    rng = np.random.default_rng(config.seed)
    makers = _pair_makers(config, rng)
    ids = config.annotator_ids
    annotators = np.repeat(np.arange(len(ids)), _counts(config.n_train, config.proportions))
    rng.shuffle(annotators)
    train, flipped = [], []
    for i, k in enumerate(annotators.tolist()):
        prompt, right, wrong = makers["train"](rng)
        flip = bool(rng.random() >= config.etas[k])
        pair_id = f"train-{i:06d}"
        chosen, rejected = (wrong, right) if flip else (right, wrong)
        train.append({"id": pair_id, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                      "annotator_id": ids[k]})
        if flip:
            flipped.append(pair_id)
    splits = {"train": train,
              "validation": _clean_rows(rng, makers["validation"], "validation", config.n_validation, ids)}
    if config.n_test:
        splits["test"] = _clean_rows(rng, makers["test"], "test", config.n_test, ids)
    flipped_set = set(flipped)
    per_annotator = {}
    for k, name in enumerate(ids):
        rows = [r["id"] for r in train if r["annotator_id"] == name]
        flips = sum(r in flipped_set for r in rows)
        per_annotator[name] = {
            "eta_star": config.etas[k], "proportion": config.proportions[k],
            "num_labels": len(rows), "num_flipped": flips,
            "realised_flip_rate": flips / len(rows) if rows else None,
            "realised_eta": 1 - flips / len(rows) if rows else None}
    prompts = {split: {row["prompt"] for row in rows} for split, rows in splits.items()}
    truth = {"task": config.task, "config": asdict(config), "annotators": per_annotator,
             "flipped_ids": flipped, "validation_flipped_ids": [], "test_flipped_ids": [],
             "realised_flip_rate": len(flipped) / len(train),
             "prompts": {split: len(p) for split, p in prompts.items()},
             "eval_prompts_seen_in_train": {split: len(p & prompts["train"])
                                            for split, p in prompts.items() if split != "train"}}
    return splits, truth


def build_tokenizer(max_operand: int, task: str = "addition"):
    """Word-level tokenizer over "+", "=" and the numbers (0..2*max_operand for addition, the
    digits 0-9 for copy); BOS prepended, EOS/PAD/UNK defined."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    numbers = range(10) if task == "copy" else range(2 * max_operand + 1)
    words = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "+", "="] + [str(n) for n in numbers]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A", pair="[BOS] $A $B",
                                                        special_tokens=[("[BOS]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_synthetic(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig()) -> dict:
    """Write the benchmark under `out_dir`; returns the paths written. Rewrites are identical
    for the same config, so calling it again is harmless."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits, truth = generate_splits(config)
    paths = {split: out / f"{split}.jsonl" for split in splits}
    paths.update(truth=out / TRUTH_FILE, tokenizer=out / "tokenizer")
    for split, rows in splits.items():
        _write_jsonl(paths[split], rows)
    paths["truth"].write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    build_tokenizer(config.max_operand, config.task).save_pretrained(str(paths["tokenizer"]))
    return {name: str(path) for name, path in paths.items()}


def load_truth(path: str | Path) -> dict:
    """truth.json; DataValidationError naming it when it is unreadable or not of this format."""
    try:
        truth = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise file_error(path, CORRUPT_FILE, f"cannot read the ground truth (truth.json): {error}") from None
    lists = ("flipped_ids", "validation_flipped_ids")
    if not isinstance(truth, dict) or not all(isinstance(truth.get(k, []), list) for k in lists):
        raise file_error(path, CORRUPT_FILE, f"the ground truth must be a JSON object whose {' and '.join(lists)} "
                         f"are lists of pair ids")
    return truth
