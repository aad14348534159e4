"""Synthetic noisy-annotator benchmark: small-number addition with K annotators of known reliability.

Each pair is a prompt "a + b =" (a, b in 0..max_operand), the correct sum and a wrong one (the sum
moved by 1-3). The prompt space is small ((max_operand + 1)^2 = 100 prompts by default, each seen
~40 times in 4,000 training pairs) so a tiny transformer trained from scratch becomes nearly always
right on the training prompts; then the RE-PO posterior separates the flipped labels and eta can
be recovered. Annotator k labels a fixed share of the pairs and flips each of its labels
independently with probability 1 - eta*_k; the validation split is clean (no flips).

Files written (`write_synthetic`): train.jsonl and validation.jsonl in the plain user format
(prompt / chosen / rejected / annotator_id / id), tokenizer/ (a word-level HF tokenizer folder
loadable with AutoTokenizer), truth.json (the ground truth; never part of the training rows).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nemo_repo.data.validate import CORRUPT_FILE, file_error

TRUTH_FILE = "truth.json"


@dataclass(frozen=True)
class SyntheticConfig:
    n_train: int = 4000
    n_validation: int = 500
    max_operand: int = 9
    etas: tuple[float, ...] = (0.95, 0.85, 0.70, 0.55)
    proportions: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    seed: int = 0

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
        if self.n_train < 1 or self.n_validation < 0 or self.max_operand < 1:
            raise ValueError("n_train >= 1, n_validation >= 0 and max_operand >= 1 are required")

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


def _pair(rng: np.random.Generator, max_operand: int) -> tuple[str, str, str]:
    a, b = (int(x) for x in rng.integers(0, max_operand + 1, size=2))
    right = a + b
    wrong = right
    while wrong == right or not 0 <= wrong <= 2 * max_operand:
        wrong = right + int(rng.choice([-3, -2, -1, 1, 2, 3]))
    return f"{a} + {b} =", f" {right}", f" {wrong}"


def generate(config: SyntheticConfig) -> tuple[list[dict], list[dict], dict]:
    """(train rows, validation rows, truth) — a pure function of `config`."""
    rng = np.random.default_rng(config.seed)
    ids = config.annotator_ids
    annotators = np.repeat(np.arange(len(ids)), _counts(config.n_train, config.proportions))
    rng.shuffle(annotators)
    train, flipped = [], []
    for i, k in enumerate(annotators.tolist()):
        prompt, right, wrong = _pair(rng, config.max_operand)
        flip = bool(rng.random() >= config.etas[k])
        pair_id = f"train-{i:06d}"
        chosen, rejected = (wrong, right) if flip else (right, wrong)
        train.append({"id": pair_id, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                      "annotator_id": ids[k]})
        if flip:
            flipped.append(pair_id)
    validation = []
    for i in range(config.n_validation):
        prompt, right, wrong = _pair(rng, config.max_operand)
        validation.append({"id": f"validation-{i:06d}", "prompt": prompt, "chosen": right,
                           "rejected": wrong, "annotator_id": ids[int(rng.integers(len(ids)))]})
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
    truth = {"task": "addition", "config": asdict(config), "annotators": per_annotator,
             "flipped_ids": flipped, "validation_flipped_ids": []}
    return train, validation, truth


def build_tokenizer(max_operand: int):
    """Word-level tokenizer over "+", "=", 0..2*max_operand; BOS prepended, EOS/PAD/UNK defined."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "+", "="] + [str(n) for n in range(2 * max_operand + 1)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A", pair="[BOS] $A $B",
                                                        special_tokens=[("[BOS]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(path)


def write_synthetic(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig()) -> dict:
    """Write the benchmark under `out_dir`; returns the paths written. Rewrites are identical
    for the same config, so calling it again is harmless."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, validation, truth = generate(config)
    paths = {"train": out / "train.jsonl", "validation": out / "validation.jsonl",
             "truth": out / TRUTH_FILE, "tokenizer": out / "tokenizer"}
    _write_jsonl(paths["train"], train)
    _write_jsonl(paths["validation"], validation)
    paths["truth"].write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    build_tokenizer(config.max_operand).save_pretrained(str(paths["tokenizer"]))
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
