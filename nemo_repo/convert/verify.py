"""Compare a Megatron model's logits with an HF folder's (after import or export).

The Megatron forward runs through megatron's forward-only schedule, so any TP/PP layout works;
the vocab-parallel logits are gathered over TP on the last pipeline stage, where (TP rank 0) the
HF model is loaded and compared. Both models run on the run's device (nemo_repo.device: the GPU on
a GPU machine), so their logits are compared where they were computed. Every rank returns the same
max |difference|.
"""

from pathlib import Path

import torch
import torch.distributed as dist

from nemo_repo.device import all_reduce, current_device
from nemo_repo.model.presets import ModelConfig

PROMPTS = ("The capital of France is", "def fibonacci(n):\n    ",
           "Preference optimisation with noisy annotators")
DEFAULT_TOLERANCE = {"fp32": 1e-4, "bf16": 0.25}


def prompt_tokens(hf_dir, vocab_size: int, prompts=PROMPTS, seed: int = 0) -> list[torch.Tensor]:
    """Token ids [1, S] per prompt: the folder's tokenizer when it has one, else fixed random ids."""
    hf_dir = Path(hf_dir)
    if (hf_dir / "tokenizer.json").is_file() or (hf_dir / "tokenizer.model").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        return [torch.tensor([tokenizer(text)["input_ids"]]) for text in prompts]
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (1, 5 + 3 * i), generator=generator)
            for i in range(len(prompts))]


@torch.no_grad()
def megatron_logits(chunks, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor | None:
    """Collective: fp32 logits [S, vocab_size] of one sequence (on the run's device) on the last
    pipeline stage, None on other stages."""
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.pipeline_parallel import get_forward_backward_func

    seq, device = tokens.shape[1], current_device()
    inputs = {"tokens": tokens.to(device), "position_ids": torch.arange(seq, device=device)[None],
              "attention_mask": torch.triu(torch.ones(seq, seq, dtype=torch.bool, device=device),
                                           1)[None, None]}
    collected = []

    def loss_func(output):
        collected.append(tensor_parallel.gather_from_tensor_model_parallel_region(output).float())
        return output.new_zeros(()), {}

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        return model(batch["tokens"], batch["position_ids"], batch["attention_mask"]), loss_func

    for chunk in chunks:
        chunk.eval()
    get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=iter([inputs]), model=chunks,
        num_microbatches=1, seq_length=seq, micro_batch_size=1, forward_only=True)
    if not parallel_state.is_pipeline_last_stage():
        return None
    return collected[0][0, :, :vocab_size]


@torch.no_grad()
def hf_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    return model(input_ids=tokens.to(model.device)).logits[0].float()


def load_hf_model(hf_dir, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype)
    return model.to(current_device()).eval()


def max_logit_difference(chunks, hf_dir, model_config: ModelConfig, prompts=PROMPTS) -> float:
    """Collective: max |Megatron logits - HF logits| over `prompts`, the same on every rank."""
    from megatron.core import parallel_state

    tokens = prompt_tokens(hf_dir, model_config.vocab_size, prompts)
    compare = (parallel_state.is_pipeline_last_stage()
               and parallel_state.get_tensor_model_parallel_rank() == 0)
    hf_model = load_hf_model(hf_dir, torch.bfloat16 if model_config.dtype == "bf16" else torch.float32) \
        if compare else None
    worst = torch.zeros((), dtype=torch.float32)
    for ids in tokens:
        ours = megatron_logits(chunks, ids, model_config.vocab_size)
        if compare:
            difference = (ours - hf_logits(hf_model, ids)).abs().max()
            worst = torch.maximum(worst, difference.cpu())
    return float(all_reduce(worst, op=dist.ReduceOp.MAX))


def tolerance_for(model_config: ModelConfig, tolerance: float | None) -> float:
    return DEFAULT_TOLERANCE[model_config.dtype] if tolerance is None else tolerance
