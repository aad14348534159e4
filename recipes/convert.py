"""HF <-> Megatron conversion (megatron-bridge), verification and a greedy-generation check.

    python -m recipes.convert import --hf HF_DIR --out CKPT [--tp 1 --pp 1] [--dtype fp32] [--verify]
    torchrun --nproc-per-node=2 -m recipes.convert import --hf HF_DIR --out CKPT --tp 2 --verify
    python -m recipes.convert export --checkpoint CKPT_OR_RUN_CHECKPOINTS --out HF_OUT [--verify]
    python -m recipes.convert generate --hf HF_OUT --prompt "..." [--max-new-tokens 32]

`import` writes a model-weights checkpoint ({"model": ...} + nemo_repo_model.json + config and
tokenizer files) that the training config takes as `model.init_from`. `export` reads such a
checkpoint or a training checkpoint (any TP/PP; a checkpoint root picks its latest step) and writes
an HF folder. `--verify` compares Megatron and HF logits and fails above `--tolerance`.
The world size must equal TP * PP (gloo on CPU, nccl on GPU).
Exit codes: 0 ok; 2 bad input; 3 verification above tolerance.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from recipes.errors import invalid_input

EXIT_VERIFY = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def layout_and_verify(sub):
        sub.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
        sub.add_argument("--pp", type=int, default=1, help="pipeline-parallel size")
        sub.add_argument("--verify", action="store_true", help="compare Megatron and HF logits")
        sub.add_argument("--tolerance", type=float, default=None,
                         help="max |logit difference| for --verify (default 1e-4 fp32, 0.25 bf16)")

    imp = commands.add_parser("import", help="HF folder -> Megatron weights checkpoint")
    imp.add_argument("--hf", required=True, help="HF model folder (config.json + safetensors)")
    imp.add_argument("--out", required=True, help="output checkpoint directory (must not exist)")
    imp.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                     help="Megatron parameter dtype (must match the training preset)")
    layout_and_verify(imp)

    exp = commands.add_parser("export", help="Megatron checkpoint -> HF folder")
    exp.add_argument("--checkpoint", required=True,
                     help="converted or training checkpoint, or a checkpoint root (latest step)")
    exp.add_argument("--out", required=True, help="output HF folder (must not exist)")
    exp.add_argument("--source", default=None,
                     help="folder with the HF config.json + tokenizer (default: found automatically)")
    exp.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                     help="dtype of the exported weights (default: the checkpoint's)")
    layout_and_verify(exp)

    gen = commands.add_parser("generate", help="reload an HF folder with transformers, greedy-decode")
    gen.add_argument("--hf", required=True)
    gen.add_argument("--prompt", default="What is the capital of France?")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    return parser


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _say(message: str) -> None:
    if _is_rank_zero():
        print(message, flush=True)


class _Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        _say(f"[convert] {what}: {now - self.start:.1f}s")
        self.start = now


def _init(args, model_config):
    from nemo_repo.model.parallel import ParallelConfig, initialize_parallel, validate_layout

    world = int(os.environ.get("WORLD_SIZE", "1"))
    parallel = ParallelConfig(tensor_model_parallel_size=args.tp, pipeline_model_parallel_size=args.pp)
    validate_layout(parallel, model_config, world)
    if world != args.tp * args.pp:
        from nemo_repo.model.parallel import LayoutError

        raise LayoutError(f"world size {world} != TP*PP = {args.tp * args.pp}; run under "
                          f"`torchrun --nproc-per-node={args.tp * args.pp}`")
    initialize_parallel(parallel, model_config)
    return parallel


def _build(model_config, parallel):
    from nemo_repo.model.policy import build_reference

    return build_reference(model_config, parallel, layout_invariant=False)


def _exit_code(args, timer, chunks, hf_dir, model_config, what: str) -> int:
    """0, or EXIT_VERIFY when `--verify` finds Megatron and HF logits further apart than allowed."""
    from nemo_repo.convert.verify import max_logit_difference, tolerance_for

    if not args.verify:
        return 0
    limit = tolerance_for(model_config, args.tolerance)
    difference = max_logit_difference(chunks, hf_dir, model_config)
    ok = difference <= limit
    _say(f"[verify] {what}: max |logit difference| = {difference:.3e} "
         f"(tolerance {limit:.1e}) {'OK' if ok else 'FAILED'}")
    timer.lap("verify")
    return 0 if ok else EXIT_VERIFY


def _must_not_exist(path: Path) -> None:
    from nemo_repo.convert.bridge import ConversionError

    if path.exists() and any(path.iterdir()):
        raise ConversionError(f"{path}: output directory exists and is not empty")


def run_import(args) -> int:
    from nemo_repo.convert.bridge import (check_hf_weights, load_hf_weights, model_config_from_hf,
                                          write_converted)
    from nemo_repo.model.weights import save_model_weights
    from nemo_repo.ranks import on_rank_zero

    timer = _Timer()
    hf_dir, out = Path(args.hf), Path(args.out)
    model_config = model_config_from_hf(hf_dir, dtype=args.dtype)
    check_hf_weights(hf_dir)
    _must_not_exist(out)
    parallel = _init(args, model_config)
    chunks = _build(model_config, parallel)
    timer.lap(f"build {model_config.name} (TP={args.tp}, PP={args.pp}, {args.dtype})")
    load_hf_weights(chunks, hf_dir, model_config)
    timer.lap("load HF weights")
    save_model_weights(out, chunks)
    # the checkpoint is complete (metadata + HF assets) on every rank's return
    on_rank_zero(write_converted, out, model_config, hf_dir, {"tp": args.tp, "pp": args.pp})
    timer.lap(f"save {out}")
    return _exit_code(args, timer, chunks, hf_dir, model_config, "import")


def resolve_checkpoint(path) -> Path:
    """A step directory as is; a checkpoint root -> its newest complete step."""
    from nemo_repo.convert.bridge import check_megatron_checkpoint
    from nemo_repo.training.checkpoint import latest_checkpoint

    path = Path(path)
    if not (path / "metadata.json").is_file():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    return check_megatron_checkpoint(path)


def checkpoint_dtype(path: Path) -> str:
    """fp32 or bf16: the dtype the embedding was saved in."""
    from megatron.core import dist_checkpointing

    metadata = dist_checkpointing.load_tensors_metadata(str(path))
    for key, tensor in metadata.items():
        if key.endswith("word_embeddings.weight"):
            return "bf16" if tensor.dtype == __import__("torch").bfloat16 else "fp32"
    from nemo_repo.convert.bridge import ConversionError

    raise ConversionError(f"{path}: no embedding weight in the checkpoint (not a GPT model checkpoint?)")


def run_export(args) -> int:
    import torch

    from nemo_repo.convert.bridge import (export_hf_weights, find_hf_assets, model_config_from_hf,
                                          read_hf_config, save_hf_folder)
    from nemo_repo.model.weights import load_model_weights
    from nemo_repo.ranks import on_rank_zero
    from nemo_repo.training.checkpoint import saved_init_from

    timer = _Timer()
    checkpoint, out = resolve_checkpoint(args.checkpoint), Path(args.out)
    assets = find_hf_assets(checkpoint, args.source, saved_init_from(checkpoint))
    hf_config = read_hf_config(assets)
    model_config = model_config_from_hf(assets, dtype=checkpoint_dtype(checkpoint))
    out_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or model_config.dtype]
    _must_not_exist(out)
    parallel = _init(args, model_config)
    chunks = _build(model_config, parallel)
    try:
        load_model_weights(checkpoint, chunks)
    except Exception as error:  # dist_checkpointing reports shape/key mismatches in several types
        from nemo_repo.convert.bridge import ConversionError

        raise ConversionError(f"{checkpoint}: does not match the model in {assets / 'config.json'}: "
                              f"{error}") from error
    timer.lap(f"load {checkpoint} (TP={args.tp}, PP={args.pp})")
    weights = export_hf_weights(chunks, hf_config, model_config, dtype=out_dtype)   # rank 0's
    on_rank_zero(save_hf_folder, weights, out, assets, out_dtype)
    timer.lap(f"write {out}")
    return _exit_code(args, timer, chunks, out, model_config, "export")


def run_generate(args) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    timer = _Timer()
    tokenizer = AutoTokenizer.from_pretrained(args.hf)
    model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32).eval()
    timer.lap(f"reload {args.hf} with transformers")
    chat = bool(tokenizer.chat_template)
    text = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], tokenize=False,
                                         add_generation_prompt=True) if chat else args.prompt
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=not chat)
    ids = inputs["input_ids"]
    with torch.no_grad():
        output = model.generate(input_ids=ids, attention_mask=inputs["attention_mask"],
                                max_new_tokens=args.max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    reply = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"[generate] prompt: {args.prompt!r}\n[generate] reply:  {reply!r}")
    timer.lap(f"greedy generation ({args.max_new_tokens} new tokens max)")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from nemo_repo.training.distenv import distributed_env

    distributed_env()   # under srun (slurm/convert.sbatch): RANK / WORLD_SIZE from SLURM_* variables
    from nemo_repo.convert.bridge import ConversionError
    from nemo_repo.model.parallel import LayoutError, destroy_parallel
    from nemo_repo.ranks import RankZeroError

    command = {"import": run_import, "export": run_export, "generate": run_generate}[args.command]
    try:
        return command(args)
    except (ConversionError, LayoutError) as error:
        return invalid_input(error, "error", show=_is_rank_zero())
    except RankZeroError:   # rank 0 failed writing and reports its own error
        return 1
    finally:
        destroy_parallel()


if __name__ == "__main__":
    sys.exit(main())
