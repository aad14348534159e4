"""Core attention for megatron's local (non-Transformer-Engine) layer spec, on torch's
`scaled_dot_product_attention`.

megatron's local `DotProductAttention` materialises the [b, heads, s, s] scores, applies the mask
and softmax, and keeps the probabilities for the backward pass: O(s^2) memory per layer and three
unfused passes. SDPA computes the same softmax(q k^T * scale + mask) v with torch's fused kernels
(flash / memory-efficient on CPU and GPU when they apply, the math kernel otherwise), keeping no
s x s tensor for backward. Same inputs and outputs ([s, b, heads, dim] in, [s, b, hidden] out),
same explicit boolean mask (True = masked: causal, padding and packed-sequence blocks, see
data/batch.py), same scale, grouped-query attention without repeating k / v. Selected by
`model.core_attention` (presets.layer_spec); the Transformer Engine spec has its own fused attention.
"""

import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention


class SDPADotProductAttention(DotProductAttention):
    """megatron's DotProductAttention (same constructor, checks and parameters) whose forward is
    one call of torch's scaled_dot_product_attention."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.softmax_type != "vanilla" or self.scale_mask_softmax.window_size is not None:
            raise ValueError("model.core_attention=sdpa supports vanilla softmax without sliding "
                             "windows; use model.core_attention=unfused")

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPADotProductAttention takes explicit masks only (no packed_seq_params, "
                             "no attention bias)")
        seq, batch = query.shape[0], query.shape[1]
        # [s, b, heads, dim] -> [b, heads, s, dim]
        query, key, value = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        dropout = self.attention_dropout.p if self.training else 0.0
        with tensor_parallel.get_cuda_rng_tracker().fork():   # as megatron's dropout (TP-consistent)
            context = F.scaled_dot_product_attention(
                query, key, value,
                attn_mask=None if attention_mask is None else ~attention_mask,   # SDPA: True = attend
                is_causal=attention_mask is None, dropout_p=dropout, scale=self.softmax_scale,
                enable_gqa=key.shape[1] != query.shape[1])
        # [b, heads, s, dim] -> [s, b, heads * dim]
        return context.permute(2, 0, 1, 3).reshape(seq, batch, self.hidden_size_per_partition)
