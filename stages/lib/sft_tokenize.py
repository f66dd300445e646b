"""Tokenising SFT records so that the loss falls on the completion alone.

Prompt and completion are tokenised separately and concatenated, so no token can straddle the
boundary (a tokenizer may merge "Response:" + " The" differently when they are tokenised together),
and the mask is exact by construction: 0 over the prompt, 1 over the completion and the EOS.
"""
from __future__ import annotations

from .loader import encode


def tokenize_prompt_completion(tokenizer, prompt: str, completion: str, max_length: int) -> dict:
    prompt_ids = encode(tokenizer, [prompt])[0]
    completion_ids = encode(tokenizer, [completion])[0] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + completion_ids)[:max_length]
    mask = ([0] * len(prompt_ids) + [1] * len(completion_ids))[:max_length]
    return {"input_ids": input_ids, "completion_mask": mask}


def tokenize_records(tokenizer, records: list[dict], max_length: int) -> list[dict]:
    return [tokenize_prompt_completion(tokenizer, r["prompt"], r["completion"], max_length) for r in records]
