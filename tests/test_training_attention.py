"""Training attention in fp32 for a bf16 model on a CPU (stages/lib/training_attention.py)."""
from __future__ import annotations

import pytest
import torch

from stages.lib.hardware import resolve_precision
from stages.lib.loader import load_model, load_tokenizer
from stages.lib.training_attention import FP32_ATTENTION, train_attention_in_fp32


@pytest.fixture()
def tiny(tiny_base):
    return tiny_base, load_tokenizer(tiny_base)


def _batch(tokenizer, texts, side):
    tokenizer.padding_side = side
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _logits_and_grad(model, batch):
    """Logits (fp32) and the first layer's query weight gradient of a summed loss over the real tokens, under
    bf16 autocast as the trainers run."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.dtype == torch.bfloat16):
        logits = model(**batch).logits.float()
    (logits.log_softmax(-1).amax(-1) * batch["attention_mask"]).sum().backward()
    grad = model.model.layers[0].self_attn.q_proj.weight.grad.float().clone()
    return logits, grad


@pytest.mark.parametrize("side", ["left", "right"])
def test_training_in_fp32_attention_matches_the_fp32_model_with_padding_masked(tiny, side):
    """A bf16 model training with fp32 attention gives the logits and gradients of the same model in fp32 up to
    bf16's rounding of the weight products, padded rows included."""
    base, tokenizer = tiny
    texts = ["Write two lines about rivers.", "List three colours, one a line, then stop here please now."]
    batch = _batch(tokenizer, texts, side)
    assert (batch["attention_mask"] == 0).any()  # the first text is padded
    reference, bf16 = load_model(base, resolve_precision("float32")), load_model(base, resolve_precision("bfloat16"))
    assert bf16.config.num_key_value_heads < bf16.config.num_attention_heads
    assert train_attention_in_fp32(bf16, "auto")
    ref_logits, ref_grad = _logits_and_grad(reference, batch)
    logits, grad = _logits_and_grad(bf16, batch)
    real = batch["attention_mask"].bool()
    assert torch.allclose(logits[real], ref_logits[real], atol=3e-2, rtol=3e-2)
    assert torch.allclose(grad, ref_grad, atol=5e-2 * ref_grad.abs().max().item())


@pytest.mark.parametrize("side", ["left", "right"])
def test_fp32_attention_masks_padding_and_shares_key_value_heads_as_sdpa_does(tiny, side):
    """In fp32 (where nothing else rounds) the function gives sdpa's logits and gradients, and a padded row
    equals its text run alone: the mask reaches torch's kernel, and each query head reads its own key/value
    head (the tiny model has 4 query heads on 2 key/value heads)."""
    from stages.lib.training_attention import _register

    base, tokenizer = tiny
    texts = ["Write two lines about rivers.", "List three colours, one a line, then stop here please now."]
    batch = _batch(tokenizer, texts, side)
    sdpa = load_model(base, resolve_precision("float32"))
    ours = load_model(base, resolve_precision("float32"))
    _register()
    ours.set_attn_implementation(FP32_ATTENTION)
    real = batch["attention_mask"].bool()
    sdpa_logits, sdpa_grad = _logits_and_grad(sdpa, batch)
    logits, grad = _logits_and_grad(ours, batch)
    assert torch.allclose(logits[real], sdpa_logits[real], atol=1e-5)
    assert torch.allclose(grad, sdpa_grad, atol=1e-5)
    alone_logits, _ = _logits_and_grad(ours, _batch(tokenizer, texts[:1], side))
    assert torch.allclose(logits[0][real[0]], alone_logits[0], atol=1e-5)


def test_only_a_half_precision_model_on_auto_attention_switches(tiny):
    base, _ = tiny
    fp32 = load_model(base, resolve_precision("float32"))
    assert not train_attention_in_fp32(fp32, "auto")
    bf16 = load_model(base, resolve_precision("bfloat16"))
    assert not train_attention_in_fp32(bf16, "sdpa")  # an implementation the user chose stays
    assert bf16.config._attn_implementation == "sdpa"
    assert train_attention_in_fp32(bf16, "auto")
    assert bf16.config._attn_implementation == FP32_ATTENTION
