"""Attention in fp32 for training a bf16 or fp16 model on a CPU.

torch's CPU flash-attention backward in bf16 costs about 0.4 ms per (sequence, head) whatever the length: at
training's shapes (4 records of 80 tokens, 9 heads) a layer's forward and backward took 16 ms in bf16 and 4 ms
with the same kernel in fp32, and the bf16 backward was a fifth of an SFT step (BENCHMARKS.md, Sapphire
Rapids). So while training, the queries, keys and values go to torch's kernel in fp32 (outside autocast, which
would cast them back), and the output returns in the model's dtype. Only attention's inputs and output change
precision; the weight products stay in bf16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FP32_ATTENTION = "cpu_fp32_sdpa"
HALF_DTYPES = (torch.bfloat16, torch.float16)


def fp32_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' attention interface: [batch, heads, length, dim] in, [batch, length, heads, dim] out.
    The mask is sdpa's (boolean, or None where causal alone suffices); key/value heads shared by several query
    heads are handed over as they are (``enable_gqa``) rather than repeated."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal and attention_mask is None and query.shape[2] > 1)
    with torch.autocast(query.device.type, enabled=False):
        out = F.scaled_dot_product_attention(
            query.float(), key.float(), value.float(), attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
            is_causal=causal, enable_gqa=key.shape[1] != query.shape[1])
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FP32_ATTENTION, fp32_attention)
    AttentionMaskInterface.register(FP32_ATTENTION, sdpa_mask)  # the masks sdpa gets


def train_attention_in_fp32(model, requested: str) -> bool:
    """With ``model.attn_implementation: auto`` (``requested``), switch a bf16 or fp16 transformers model (the base,
    before a trainer adds its LoRA adapter; a merged start adapter is part of it) on a CPU to
    ``fp32_attention``, for good: call it on a model loaded for training. Returns whether it did; other models,
    and an attention implementation the user chose, are left as they are."""
    if requested != "auto" or model.config._attn_implementation != "sdpa":
        return False
    if model.device.type != "cpu" or model.dtype not in HALF_DTYPES:
        return False
    _register()
    model.set_attn_implementation(FP32_ATTENTION)
    return True
