"""Tokenising SFT records so that the loss falls on the completion alone.

Prompt and completion are tokenised separately and concatenated, so no token can straddle the
boundary (a tokenizer may merge "Response:" + " The" differently when they are tokenised together),
and the mask is exact by construction: 0 over the prompt, 1 over the completion and the EOS.

A record whose prompt alone fills ``max_length`` keeps no completion token: it would teach nothing, and
TRL drops such records without a count. That is an error naming the record, not a silent drop: our SFT
prompts are short zero-shot instructions, so it means train_sft.max_length is set too low for the data, and
dropping records would quietly train on another set than the one data/sft holds.
"""
from __future__ import annotations

from .errors import UserError
from .loader import encode


def tokenize_prompt_completion(tokenizer, prompt: str, completion: str, max_length: int) -> dict:
    prompt_ids = encode(tokenizer, [prompt])[0]
    completion_ids = encode(tokenizer, [completion])[0] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + completion_ids)[:max_length]
    mask = ([0] * len(prompt_ids) + [1] * len(completion_ids))[:max_length]
    return {"input_ids": input_ids, "completion_mask": mask}


def tokenize_records(tokenizer, records: list[dict], max_length: int) -> list[dict]:
    examples = [tokenize_prompt_completion(tokenizer, r["prompt"], r["completion"], max_length) for r in records]
    for record, example in zip(records, examples):
        if not any(example["completion_mask"]):
            prompt_tokens = len(encode(tokenizer, [record["prompt"]])[0])
            raise UserError(
                f"train_sft.max_length={max_length}: SFT record key {record.get('key')!r} has a {prompt_tokens}-token "
                f"prompt, so truncation leaves none of its completion to learn from; raise train_sft.max_length above "
                f"{prompt_tokens}")
    return examples
