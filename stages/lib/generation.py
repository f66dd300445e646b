"""Batched sampling with left padding and stopping by string (never by a stop string's last token)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class Sample:
    text: str  # the decoded new tokens, stop string included if one was hit
    n_tokens: int  # new tokens generated, padding excluded
    hit_token_limit: bool  # generation ran to max_new_tokens without an EOS


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    batch_size: int = 16  # sequences per forward pass (prompts x samples)
    seed: int = 0


def _length_sorted_batches(lengths: list[int], prompts_per_batch: int) -> list[list[int]]:
    # Similar lengths together waste less compute on padding; the order is deterministic.
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + prompts_per_batch] for i in range(0, len(order), prompts_per_batch)]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    stop_strings: Sequence[str] = (),
    num_samples: int = 1,
    desc: str = "generate",
) -> list[list[Sample]]:
    """``num_samples`` samples for each prompt, in prompt order."""
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    batches = _length_sorted_batches([len(e) for e in encoded], max(1, settings.batch_size // num_samples))
    results: list[list[Sample]] = [[] for _ in prompts]
    sampling = settings.temperature > 0
    gen_kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sampling,
        num_return_sequences=num_samples,
        repetition_penalty=settings.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if sampling:
        gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop_strings:
        gen_kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)

    torch.manual_seed(settings.seed)
    generated_tokens, start = 0, time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch")
    for batch in bar:
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
        padded = {k: v.to(model.device) for k, v in padded.items()}
        with torch.inference_mode():
            out = model.generate(**padded, **gen_kwargs)
        new = out[:, padded["input_ids"].shape[1] :].cpu()
        for row, ids in enumerate(new.tolist()):
            sample = _to_sample(ids, tokenizer, settings.max_new_tokens)
            results[batch[row // num_samples]].append(sample)
            generated_tokens += sample.n_tokens
        bar.set_postfix(tok_s=f"{generated_tokens / (time.perf_counter() - start):.0f}")
    return results


def _to_sample(ids: list[int], tokenizer, max_new_tokens: int) -> Sample:
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
        ended = True
    else:
        ended = False
    # Left padding only pads prompts; finished rows are right-filled with pad, which we drop.
    pad = tokenizer.pad_token_id
    while ids and ids[-1] == pad:
        ids = ids[:-1]
        ended = True
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return Sample(text=text, n_tokens=len(ids), hit_token_limit=not ended and len(ids) >= max_new_tokens)
