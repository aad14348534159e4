"""HF TRL's DPOTrainer on the e2e benchmark's setting, for comparison (benchmarks/e2e_throughput.py).

Runs under ANOTHER interpreter that has trl installed (never a dependency of this project; it
imports nothing from it), e.g. a venv outside the repository:

    python3.11 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install torch==2.13.0 "trl==1.16.*" transformers
    /work/trl-venv/bin/python benchmarks/trl_dpo.py --model HF_DIR --train PAIRS.jsonl --out DIR

Writes DIR/metrics.jsonl (one {"step", "split": "train", "time/step_s"} record per optimizer step,
as recipes.train does) and DIR/tokens.json (non-padding prompt + completion tokens of chosen and
rejected per epoch, after TRL's truncation to --max-length, and the pairs TRL kept: it drops a
pair whose prompt alone reaches --max-length).
"""

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer


class StepTimes(TrainerCallback):
    """One metrics.jsonl record per optimizer step: its wall time (micro-batches + update)."""

    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8")
        self.started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.started
        self.file.write(json.dumps({"step": state.global_step, "split": "train", "time/step_s": seconds}) + "\n")
        self.file.flush()


def tokens_per_epoch(dataset, max_length: int) -> int:
    total = 0
    for row in dataset:
        prompt = len(row["prompt_ids"])
        total += min(prompt + len(row["chosen_ids"]), max_length) + min(prompt + len(row["rejected_ids"]), max_length)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face model folder")
    parser.add_argument("--train", required=True, help="conversational pairs JSONL (prompt/chosen/rejected)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precompute-ref", action="store_true", help="precompute_ref_log_probs=True")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    dataset = load_dataset("json", data_files=args.train, split="train").select_columns(["prompt", "chosen", "rejected"])
    config = DPOConfig(
        output_dir=str(args.out / "trainer"), per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.accumulation, learning_rate=args.lr, beta=args.beta,
        max_length=args.max_length, num_train_epochs=args.epochs, lr_scheduler_type="cosine",
        warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, precompute_ref_log_probs=args.precompute_ref, seed=1234,
        disable_tqdm=True, max_grad_norm=1.0)
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[StepTimes(args.out / "metrics.jsonl")])
    (args.out / "tokens.json").write_text(json.dumps(
        {"tokens_per_epoch": tokens_per_epoch(trainer.train_dataset, args.max_length),
         "pairs": len(trainer.train_dataset)}) + "\n")
    trainer.train()


if __name__ == "__main__":
    main()
