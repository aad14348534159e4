"""Peak memory of the per-sequence log-prob computation (forward + backward), relative to the
size of the logits tensor it consumes.

Compares nemo_repo.model.logprobs (megatron's vocab_parallel_cross_entropy, in place: the logits
become the softmax saved for backward, whose gradient is written into the same storage) with the
textbook `log_softmax(logits).gather(labels)`. Each variant runs in a fresh subprocess and the
extra peak is read from the process high-water mark (VmHWM, reset first) above the resident size just
before the output layer runs, so it includes the logits themselves (1.0) and every temporary of
forward and backward, on CPU.

    python -m benchmarks.logprob_memory [--rows 4] [--seq 512] [--vocab 32768] [--json out.json]
"""

import argparse
import json
import resource
import subprocess
import sys

import torch

from benchmarks.report import emit

VARIANTS = ("nemo_repo-fp32", "naive-fp32", "nemo_repo-bf16", "naive-bf16")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _reset_peak() -> None:
    """Reset the kernel's resident high-water mark (VmHWM) to the current size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(variant: str, rows: int, seq: int, vocab: int) -> dict:
    from nemo_repo.model.logprobs import sequence_sums, token_logprobs
    from nemo_repo.model.parallel import ParallelConfig, initialize_parallel
    from nemo_repo.model.presets import get_preset

    initialize_parallel(ParallelConfig(), get_preset("tiny_llama"))
    dtype = torch.bfloat16 if variant.endswith("bf16") else torch.float32
    g = torch.Generator().manual_seed(0)
    # a small output layer produces the logits, as in the model (they are not a leaf)
    hidden = torch.randn(rows, seq, 64, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, 64, generator=g) / 8).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (rows, seq), generator=g)
    loss_mask = torch.ones(rows, seq)
    sequence_ids = torch.arange(rows)[:, None].expand(rows, seq).contiguous()
    logits_bytes = rows * seq * vocab * hidden.element_size()
    _reset_peak()
    before = _rss_bytes()
    logits = hidden @ weight.t()
    if variant.startswith("nemo_repo"):
        token = token_logprobs(logits, labels, vocab)
    else:
        token = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None])[..., 0]
    sums, _ = sequence_sums(token, loss_mask, sequence_ids, rows)
    sums.sum().backward()
    peak = _peak_bytes()
    return {"variant": variant, "logits_mib": logits_bytes / 2**20,
            "extra_peak_mib": (peak - before) / 2**20,
            "extra_peak_over_logits": (peak - before) / logits_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--json")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.rows, args.seq, args.vocab)))
        return
    results = []
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.logprob_memory", "--child", variant,
                               "--rows", str(args.rows), "--seq", str(args.seq),
                               "--vocab", str(args.vocab)],
                              capture_output=True, text=True, timeout=600, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    emit({"shape": [args.rows, args.seq, args.vocab], "results": results}, args.json)


if __name__ == "__main__":
    main()
