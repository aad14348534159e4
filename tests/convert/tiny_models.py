"""Tiny random HF models (built from a config, saved with save_pretrained; no hub access)."""

from pathlib import Path

import torch

# vocab sizes that are not multiples of 128, so Megatron pads the vocabulary (and pads
# differently at TP=1 and TP=2).
_COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
               initializer_range=0.05)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(vocab_size=320, tie_word_embeddings=True,
                                                      rope_theta=10000.0)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(vocab_size=300, tie_word_embeddings=False,
                                                      rope_theta=1000000.0)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(vocab_size=256, tie_word_embeddings=False,
                                                            sliding_window=None)),
}


def make_tiny_model(family: str, directory, seed: int = 0) -> Path:
    """Save a randomly initialised tiny `family` model (fp32) under `directory`; return it."""
    import transformers

    config_name, model_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**_COMMON, **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    with torch.no_grad():   # HF zero-inits biases and ones-inits norms: make every value distinct
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory
