"""Cleaning a raw generation into a response, and the validity gates a kept response must pass."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .prompts import NEXT_TURN_MARKERS


@dataclass(frozen=True)
class Cleaned:
    text: str
    had_delimiter: bool  # the raw text contained the delimiter (cut there)
    ran_on: bool  # the raw text ran on into a next turn (cut there)
    truncated: bool  # generation hit max_new_tokens without finishing


def clean(raw: str, delimiter: str, hit_token_limit: bool) -> Cleaned:
    text = raw
    had_delimiter = delimiter in text
    if had_delimiter:
        text = text.split(delimiter, 1)[0]
    cut = [text.find(m) for m in NEXT_TURN_MARKERS if m in text]
    ran_on = bool(cut)
    if cut:
        text = text[: min(cut)]
    # A generation stopped at the token limit may end in part of the delimiter ("##").
    text = _strip_partial_delimiter(text.rstrip(), delimiter)
    truncated = hit_token_limit and not had_delimiter and not ran_on
    return Cleaned(text=text.strip(), had_delimiter=had_delimiter, ran_on=ran_on, truncated=truncated)


def _strip_partial_delimiter(text: str, delimiter: str) -> str:
    for n in range(len(delimiter) - 1, 0, -1):
        if text.endswith(delimiter[:n]):
            return text[: -n]
    return text


def leaks_delimiter(text: str, delimiter: str) -> bool:
    return delimiter in text or any(m.strip() in text for m in NEXT_TURN_MARKERS[:1])


def is_valid(cleaned: Cleaned, delimiter: str, min_words: int = 1) -> bool:
    """A response we would train on: has content, and no delimiter or next-turn residue."""
    words = re.findall(r"\w+", cleaned.text)
    return len(words) >= min_words and not leaks_delimiter(cleaned.text, delimiter)
