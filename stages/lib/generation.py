"""Sampling many completions from one model, stopped by string (never by a stop string's last token).

``generate`` is the one entry point. Plain decoder-only models whose every layer caches full attention go
through the slot decoder (stages/lib/slot_decoder.py: continuous batching, a preallocated cache, shared
few-shot prefixes computed once); others fall back to Hugging Face's ``model.generate``
(stages/lib/hf_generation.py). How each token is chosen is stages/lib/sampling.py.

Sampling is per row: every (prompt, sample) has its own random generator, seeded from the generation seed,
the prompt text and the sample index, so the random draws do not depend on which rows share a batch. Same
inputs, settings and thread count give identical output. In float32 a sample can also be regenerated from its
stored prompt, seed and sample index alone; in bfloat16 the matrix products' rounding depends on the batch
shape (measured on this CPU: 5 of 6 prompts diverge when run alone), so only the whole run reproduces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Sample:
    text: str  # the decoded new tokens, stop string included if one was hit
    n_tokens: int  # new tokens generated (the end-of-sequence token and padding excluded)
    hit_token_limit: bool  # generation ran to max_new_tokens without an EOS or a stop string


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float  # 0 means greedy
    top_p: float
    repetition_penalty: float
    batch_size: int  # sequences decoded together (prompts x samples); finished rows free their slot at once
    seed: int


def greedy(max_new_tokens: int, batch_size: int) -> GenerationSettings:
    """Settings for greedy decoding (evaluation): no sampling, no penalty, so the seed plays no part."""
    return GenerationSettings(max_new_tokens, temperature=0.0, top_p=1.0, repetition_penalty=1.0,
                              batch_size=batch_size, seed=0)


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    stop_strings: Sequence[str] = (),
    samples_per_prompt: int = 1,
    desc: str = "generate",
    sample_offset: int = 0,
) -> list[list[Sample]]:
    """``samples_per_prompt`` samples for each prompt, in prompt order (sample i of a prompt at index i).

    Sample i of a prompt is drawn as sample number ``sample_offset + i``: a later call with ``sample_offset=k``
    continues a run of k samples per prompt with new draws, as if the first call had asked for more."""
    if samples_per_prompt < 1:
        raise ValueError("samples_per_prompt must be >= 1")
    if sample_offset < 0:
        raise ValueError("sample_offset must be >= 0")
    if settings.max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    prompts = list(prompts)
    if not prompts:
        return []
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("generate: an empty prompt has nothing to continue")
    # The decoders build the Sample and read the GenerationSettings defined above, so they are imported here.
    from .slot_decoder import SlotDecoder, supports_slot_decoding

    if supports_slot_decoding(model):
        decoder = SlotDecoder(model, tokenizer, prompts, encoded, settings, list(stop_strings), samples_per_prompt,
                              sample_offset)
        return decoder.run(desc)
    from .hf_generation import generate_with_hf

    return generate_with_hf(model, tokenizer, prompts, settings, stop_strings=stop_strings,
                            samples_per_prompt=samples_per_prompt, desc=desc, sample_offset=sample_offset)
