"""Choosing the next token of each row: the repetition penalty, greedy or temperature + top-p sampling, and
the per-row random seed that makes a sample independent of the batch it ran in."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from .generation import GenerationSettings


def row_seed(seed: int, prompt: str, sample_index: int) -> int:
    """The random seed of one (prompt, sample): stable across runs, machines and batch layouts."""
    digest = hashlib.sha256(f"{seed}\x00{sample_index}\x00{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)



_TOP_P_CANDIDATES = (64, 1024, None)  # exact top-p widens its look at the best tokens only as far as needed


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty, as Hugging Face applies it: seen tokens' positive logits divided, negative multiplied.

    ``history`` holds, per row, the ids seen so far (prompt and generated); a row may repeat ids as padding.
    """
    if penalty == 1.0 or history.shape[1] == 0:
        return logits
    seen = logits.gather(1, history)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, history, seen)


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) cut to the top-p nucleus, using ``uniforms`` (one
    U[0, 1) draw per row) as the randomness.

    The nucleus is the smallest set of most probable tokens whose mass reaches ``top_p`` (a token is kept while
    the mass before it is below top_p), as in Hugging Face's TopPLogitsWarper. Sorting a 49k vocabulary for
    every row and step is what made sampling slow; here each row looks at its best 64 tokens first, then
    1024, and sorts the whole vocabulary only if its nucleus is wider still."""
    probs = torch.softmax(logits / temperature, dim=-1)
    vocab = probs.shape[-1]
    if top_p >= 1.0:  # no truncation: invert the CDF in vocabulary order, no sort needed
        ids = torch.arange(vocab, device=probs.device).expand_as(probs)
        return _pick(probs, ids, 1.0, uniforms)
    out = torch.empty(len(probs), dtype=torch.long, device=probs.device)
    rows = torch.arange(len(probs), device=probs.device)
    for size in _TOP_P_CANDIDATES:
        size = vocab if size is None else min(size, vocab)
        sub = probs[rows]
        if size < vocab:
            top_probs, top_ids = sub.topk(size, dim=-1)  # sorted, most probable first
        else:
            top_probs, top_ids = sub.sort(dim=-1, descending=True)
        done = top_probs.sum(-1) >= top_p if size < vocab else torch.ones(len(rows), dtype=torch.bool)
        if bool(done.any()):
            out[rows[done]] = _pick(top_probs[done], top_ids[done], top_p, uniforms[rows[done]])
        rows = rows[~done]
        if len(rows) == 0:
            break
    return out


def _pick(probs: torch.Tensor, ids: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Invert the CDF of ``probs`` (rows sorted most probable first when top_p < 1) at ``uniforms``."""
    if top_p < 1.0:
        before = probs.cumsum(-1) - probs  # mass of the strictly more probable tokens
        kept = torch.where(before < top_p, probs, torch.zeros_like(probs))
        kept[:, 0] = probs[:, 0]  # at least one token always survives
    else:
        kept = probs
    cdf = kept.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    # Rounding can put the target past the last kept token: step back to the last token with mass.
    chosen = ids.gather(1, index).squeeze(-1)
    bad = kept.gather(1, index).squeeze(-1) <= 0
    if bool(bad.any()):
        last = (kept > 0).long().cumsum(-1).argmax(-1, keepdim=True)  # first index reaching the final count
        chosen = torch.where(bad, ids.gather(1, last).squeeze(-1), chosen)
    return chosen


def choose_tokens(logits: torch.Tensor, history: torch.Tensor, settings: GenerationSettings,
                  generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """Next token per row: repetition penalty, then greedy or temperature + top-p sampling."""
    logits = apply_repetition_penalty(logits.float(), history, settings.repetition_penalty)
    if settings.temperature <= 0:
        return logits.argmax(-1)
    uniforms = torch.cat([torch.rand(1, generator=g) for g in generators])
    return nucleus_sample(logits, settings.temperature, settings.top_p, uniforms)
