"""Attention for one new token a row over the slot cache, used in bf16 and fp16 on a CPU.

On a CPU, torch's fused attention runs a single query token far below the memory's rate; two batched products
and a softmax read the cache once per key/value head instead (BENCHMARKS.md). ``DecodeAttention`` switches a
model to it for the length of a decoding loop and back after.
"""
from __future__ import annotations

import torch

DECODE_ATTENTION = "slot_decode"
DECODE_ATTENTION_DTYPES = (torch.bfloat16, torch.float16)  # in fp32 torch's fused kernel was as fast


def decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of one new token per row over the slot cache, as two batched products and a softmax.

    On a CPU, torch's fused attention runs a single query token far below the memory's rate: measured on a
    Zen 5 core, 64 rows over 700 cached tokens took 7.5 ms a layer in sdpa and about 4.6 ms here
    (BENCHMARKS.md). The query heads that share a key/value head are stacked as rows of one product, so the
    cache is read once per key/value head. Prompts (several tokens a row) go to sdpa unchanged. Scores are
    rounded to the cache's dtype before an fp32 softmax, as transformers' eager attention does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # query head h reads key/value head h // group
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float().mul_(dim ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores.add_(attention_mask)
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # [rows, kv_heads, group, dim]
    return out.reshape(rows, 1, heads, dim), None


def _register_decode_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)  # the same boolean masks sdpa gets


class DecodeAttention:
    """Within the block, a bf16 or fp16 model on a CPU running sdpa or eager attention uses ``decode_attention``;
    restored after. In fp32 torch's kernel was as fast (BENCHMARKS.md), so fp32 models keep it."""

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model = base if hasattr(base, "set_attn_implementation") else None
        self.before = getattr(getattr(base, "config", None), "_attn_implementation", None)

    def __enter__(self):
        half = self.model is not None and self.model.dtype in DECODE_ATTENTION_DTYPES
        if half and self.model.device.type == "cpu" and self.before in ("sdpa", "eager"):
            _register_decode_attention()
            self.model.set_attn_implementation(DECODE_ATTENTION)
        else:
            self.model = None
        self.active = self.model is not None
        return self

    def __exit__(self, *exc):
        if self.model is not None:
            self.model.set_attn_implementation(self.before)
