"""Log-probabilities of the label tokens through the output layer, scored only where there is a label.

TRL's DPOTrainer replaces the model's forward with a "fused LM head" that returns per-token log-probabilities
instead of logits. Where Triton runs it scores only the labelled positions; on a CPU it scores every position
(prompt and padding too) in tiles of up to 4096 tokens x 32768 vocabulary entries, and each tile goes through
about ten full-width fp32 element-wise passes forward and again backward: GBs of temporaries and most of a
step's time (BENCHMARKS.md). ``install_label_logprob_head`` puts this module's head in its place: only the
completion tokens reach the output layer, ``ROWS`` of them at a time, so a temporary is ``ROWS`` x vocabulary.

The head computes what TRL's does (``trl.trainer.utils.FusedCausalLMOutput``: log-probabilities with their
gradient; entropy, mean logit, top-1 and log-sum of squared probabilities for the logs, without), for models
whose logits are a plain product with the output embedding (no temperature, scale or soft-capping: Llama,
Qwen2, Mistral, ...). ``supports_label_logprob_head`` says whether a model is one.
"""
from __future__ import annotations

import functools
import types

import torch

ROWS = 256  # labelled tokens per output-layer product: 256 x 49152 fp32 logits = 48 MiB a temporary
OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


class LabelLogProbs(torch.autograd.Function):
    """log softmax(hidden @ weight.T)[target] per row, chunk by chunk, and the no-gradient statistics asked for."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, wanted: tuple[str, ...],
                rows: int):
        device = hidden.device.type
        compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        n = hidden.shape[0]
        f32 = dict(device=hidden.device, dtype=torch.float32)
        log_probs, log_z = torch.empty(n, **f32), torch.empty(n, **f32)
        extra = {name: torch.empty(n, **f32) for name in ("entropy", "log_sum_sq_probs", "mean_logits") if name in wanted}
        is_top1 = torch.empty(n, dtype=torch.bool, device=hidden.device) if "is_top1" in wanted else None
        w = weight.to(compute_dtype)
        with torch.no_grad():
            for start in range(0, n, rows):
                end = min(start + rows, n)
                logits = torch.mm(hidden[start:end].to(compute_dtype), w.t()).float()  # [rows, vocab]
                lse = torch.logsumexp(logits, dim=-1)
                log_z[start:end] = lse
                log_probs[start:end] = logits.gather(1, targets[start:end, None]).squeeze(1) - lse
                if is_top1 is not None:
                    is_top1[start:end] = logits.argmax(-1) == targets[start:end]  # first maximum, as TRL's
                if "mean_logits" in extra:
                    extra["mean_logits"][start:end] = logits.mean(-1)
                if "entropy" in extra or "log_sum_sq_probs" in extra:
                    probs = (logits - lse[:, None]).exp_()
                    if "entropy" in extra:  # H = log Z - sum p z
                        extra["entropy"][start:end] = lse - torch.linalg.vecdot(probs, logits)
                    if "log_sum_sq_probs" in extra:
                        extra["log_sum_sq_probs"][start:end] = torch.linalg.vecdot(probs, probs).log()
        ctx.save_for_backward(hidden, weight, targets, log_z)
        ctx.compute_dtype, ctx.rows = compute_dtype, rows
        stats = [extra.get("entropy"), extra.get("log_sum_sq_probs"), extra.get("mean_logits"), is_top1]
        ctx.mark_non_differentiable(*(s for s in stats if s is not None))
        return log_probs, *stats

    @staticmethod
    def backward(ctx, grad_log_probs, *_):
        hidden, weight, targets, log_z = ctx.saved_tensors
        grad_hidden = grad_weight = None
        if grad_log_probs is None:
            return None, None, None, None, None
        w = weight.to(ctx.compute_dtype)
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.empty_like(hidden)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, hidden.shape[0], ctx.rows):
            end = min(start + ctx.rows, hidden.shape[0])
            h = hidden[start:end].to(ctx.compute_dtype)
            logits = torch.mm(h, w.t()).float()
            # d log p_t / d z_j = [j = t] - p_j, times the incoming gradient of each row
            grad = logits.sub_(log_z[start:end, None]).exp_().neg_()
            rows = torch.arange(end - start, device=grad.device)
            grad[rows, targets[start:end]] += 1.0
            grad.mul_(grad_log_probs[start:end, None].float())
            if grad_hidden is not None:
                grad_hidden[start:end] = torch.mm(grad.to(ctx.compute_dtype), w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.addmm_(grad.t(), h.float())
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def label_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                    wanted: tuple[str, ...] = ("log_probs",), rows: int = ROWS):
    """(log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1) for rows of ``hidden`` [n, d] and their
    ``targets`` [n]; the statistics not in ``wanted`` are None. Only log_probs carries a gradient."""
    return LabelLogProbs.apply(hidden, weight, targets, tuple(wanted), rows)


def supports_label_logprob_head(model) -> bool:
    """Logits are hidden @ output embedding, nothing else: no bias, scale, temperature or soft-capping."""
    config = model.config.get_text_config()
    scaled = any(getattr(config, key, None) not in (None, 1.0) for key in
                 ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))
    head = model.get_output_embeddings()
    return not scaled and head is not None and getattr(head, "bias", None) is None and hasattr(model, "base_model")


def install_label_logprob_head(model, outputs: tuple[str, ...] = OUTPUTS, pairs_share_prompts: bool = False) -> None:
    """Make ``model(..., labels=labels, fused_lm_head=True)`` return TRL's FusedCausalLMOutput from this module's
    head. ``model`` is the transformers model itself (under PEFT: ``peft_model.get_base_model()``); without
    ``fused_lm_head`` its forward is the model class's own, so generation is unchanged. Idempotent.

    ``pairs_share_prompts``: the batches are DPO's stacked pairs, whose prompts go through the model once
    (stages.lib.shared_prompt) where the batch and the attention implementation allow it."""
    from trl.trainer.utils import FusedCausalLMOutput

    model._label_head_packs_pairs = pairs_share_prompts
    if getattr(model.forward, "_label_logprob_head", False):
        return
    class_forward = type(model).forward

    @functools.wraps(class_forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                       ("num_items_in_batch", num_items_in_batch)) if v is not None}
            return class_forward(self, *args, **kwargs, **extra)
        kwargs["use_cache"] = False
        shifted = shift_labels is None  # position t is scored on the label at t + 1
        if shifted:
            shift_labels = labels[:, 1:]
        mask = shift_labels != -100
        packed = _pack(self, args, kwargs, labels) if shifted else None
        if packed is None:
            hidden = self.base_model(*args, **kwargs).last_hidden_state
            selected = (hidden[:, :-1] if shifted else hidden)[mask]
        else:
            hidden = self.base_model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                                     attention_mask=packed.attention_mask, use_cache=False).last_hidden_state
            selected = packed.gather(hidden, mask)
        head = self.get_output_embeddings()
        per_token = label_log_probs(selected, head.weight, shift_labels[mask].to(head.weight.device), outputs)
        # Back to [batch, positions], zero where there is no label (masked_scatter keeps the gradient's path)
        log_probs, entropy, log_sum_sq, mean_logits, is_top1 = (
            None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy,
                                   log_sum_sq_probs=log_sum_sq, mean_logits=mean_logits, is_top1=is_top1,
                                   label_mask=mask)

    forward._label_logprob_head = True
    model.forward = types.MethodType(forward, model)


def _pack(model, args: tuple, kwargs: dict, labels):
    """The batch as one row per pair (stages.lib.shared_prompt), or None: not asked for, inputs other than ids
    and a padding mask (PEFT hands on ``inputs_embeds=None`` and the like: unset ones are no inputs), an
    attention implementation that would not read a boolean mask, or not stacked pairs."""
    from .shared_prompt import ATTENTION_WITH_BOOLEAN_MASKS, pack_pairs

    if not getattr(model, "_label_head_packs_pairs", False) or args or labels is None:
        return None
    if kwargs.get("input_ids") is None or any(
            v not in (None, False) for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "use_cache")):
        return None
    if model.config._attn_implementation not in ATTENTION_WITH_BOOLEAN_MASKS:
        return None
    return pack_pairs(kwargs["input_ids"], kwargs.get("attention_mask"), labels)
