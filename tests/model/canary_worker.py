"""Tiny megatron GPTModel forward + backward on CPU, with or without nemo_repo's compat patches.

Usage: python canary_worker.py {patched|unpatched}. Prints CANARY-OK on success; on failure
prints CANARY-FAIL <exception type>: <message> and exits 3.
"""

import os
import sys
import traceback

import torch
import torch.distributed as dist


def main(patched: bool) -> None:
    if patched:
        from nemo_repo.model.compat import apply_cpu_compat
        apply_cpu_compat()
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    parallel_state.initialize_model_parallel(create_gloo_process_groups=False)
    tensor_parallel.model_parallel_cuda_manual_seed(1)
    config = TransformerConfig(num_layers=1, hidden_size=16, num_attention_heads=2,
                               use_cpu_initialization=True, gradient_accumulation_fusion=False,
                               masked_softmax_fusion=False, bias_activation_fusion=False,
                               bias_dropout_fusion=False, apply_rope_fusion=False,
                               persist_layer_norm=False)
    model = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(),
                     vocab_size=32, max_sequence_length=8, position_embedding_type="rope")
    tokens = torch.randint(0, 32, (1, 8))
    mask = torch.triu(torch.ones(8, 8, dtype=torch.bool), 1)[None, None]
    model(tokens, torch.arange(8)[None], mask).sum().backward()


if __name__ == "__main__":
    try:
        main(sys.argv[1] == "patched")
    except Exception as error:  # the canary reports whatever megatron raises today
        traceback.print_exc()
        print(f"CANARY-FAIL {type(error).__name__}: {error}")
        sys.exit(3)
    print("CANARY-OK")
