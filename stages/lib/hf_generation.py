"""The fallback decoder: batched Hugging Face ``model.generate`` with string stopping, for models whose cache
is not plain full attention (sliding windows, linear attention), which the slot decoder cannot hold."""
from __future__ import annotations

import time
from typing import Sequence

import torch
from tqdm import tqdm

from .generation import GenerationSettings, Sample
from .output_head import contiguous_head_input
from .sampling import row_seed
from .stopping import StopChecker


def generate_with_hf(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, *,
                     stop_strings: Sequence[str] = (), samples_per_prompt: int = 1,
                     desc: str = "generate", sample_offset: int = 0) -> list[list[Sample]]:
    """Fixed, length-sorted batches through ``model.generate``. The string stopping criteria are built once:
    preparing them scans the whole vocabulary (seconds for a 49k vocabulary), and Hugging Face's own cache of
    that work misses when the vocabulary dict comes back in a different order. Sampling draws from one
    generator for the whole call (seeded from the seed and ``sample_offset``), so here a sample depends on the
    batch it ran in."""
    from transformers import StoppingCriteriaList
    from transformers.generation.stopping_criteria import StopStringCriteria

    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    per_batch = max(1, settings.batch_size // samples_per_prompt)
    batches = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]
    results: list[list[Sample]] = [[] for _ in prompts]
    sampling = settings.temperature > 0
    gen_kwargs = dict(
        max_new_tokens=settings.max_new_tokens, do_sample=sampling, num_return_sequences=samples_per_prompt,
        repetition_penalty=settings.repetition_penalty, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if sampling:
        gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    stops = [s for s in stop_strings if s]
    if stops:
        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([StopStringCriteria(tokenizer, stops)])
    checker = StopChecker(tokenizer, stops)
    torch.manual_seed(settings.seed if sample_offset == 0 else row_seed(settings.seed, "", sample_offset))
    generated, start = 0, time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch")
    for batch in bar:
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
        padded = {k: v.to(model.device) for k, v in padded.items()}
        with torch.inference_mode(), contiguous_head_input(model):
            out = model.generate(**padded, **gen_kwargs)
        new = out[:, padded["input_ids"].shape[1] :].cpu().tolist()
        for row, ids in enumerate(new):
            sample = _hf_row_to_sample(ids, tokenizer, settings.max_new_tokens, checker)
            results[batch[row // samples_per_prompt]].append(sample)
            generated += sample.n_tokens
        bar.set_postfix(tok_s=f"{generated / (time.perf_counter() - start):.0f}")
    return results


def _hf_row_to_sample(ids: list[int], tokenizer, max_new_tokens: int, checker: StopChecker) -> Sample:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ended = eos in ids
    if ended:
        ids = ids[: ids.index(eos)]
    # A row that stopped early is right-filled with pad (pad may equal eos, handled above).
    while ids and ids[-1] == pad:
        ids = ids[:-1]
        ended = True
    ended = ended or len(ids) < max_new_tokens or (bool(ids) and checker.hits([ids])[0])
    return Sample(tokenizer.decode(ids, skip_special_tokens=True), len(ids), hit_token_limit=not ended)
