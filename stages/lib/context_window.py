"""Every prompt must leave room in the model's context for the tokens it is allowed to generate.

A prompt past the context is answered from positions the model never saw in training, so its answer
is scored as garbage without a word; and in batched generation one very long prompt sizes the cache
of every slot. Such prompts are refused, by count and by key, before generation starts: truncating
one would change the instruction (often cutting off the constraint that the checkers then score).
"""
from __future__ import annotations

from typing import Sequence

from .errors import UserError
from .loader import encode

CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(model) -> int | None:
    """Positions the model was built for, from its config; None when the config does not say."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompts_fit(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, *, budget_key: str,
                      source: str, keys: Sequence | None = None) -> None:
    """Raise a UserError naming how many prompts (and which) leave fewer than ``max_new_tokens`` positions."""
    limit = context_length(model)
    if limit is None:
        return
    room = limit - max_new_tokens
    if room < 1:
        raise UserError(f"{budget_key}={max_new_tokens} does not fit the model's context of {limit} tokens")
    lengths = [len(ids) for ids in encode(tokenizer, list(prompts))]
    over = [i for i, n in enumerate(lengths) if n > room]
    if not over:
        return
    keys = list(keys) if keys is not None else list(range(len(prompts)))
    worst = max(over, key=lambda i: lengths[i])
    named = ", ".join(str(keys[i]) for i in over[:5]) + (", ..." if len(over) > 5 else "")
    raise UserError(
        f"{source}: {len(over)} of {len(prompts)} prompts do not fit the model's context of {limit} tokens with "
        f"{budget_key}={max_new_tokens} (at most {room} prompt tokens); keys {named}; the longest, key "
        f"{keys[worst]}, has {lengths[worst]} tokens. Shorten or remove them, or lower {budget_key}")
