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


def clean(raw: str, delimiter: str, hit_token_limit: bool, markers: tuple[str, ...] = NEXT_TURN_MARKERS) -> Cleaned:
    """The response in a raw generation: cut at the delimiter or at a run-on into a next turn.

    A colon is never a cut point by itself ("Ratio 3:1" stays whole); only a whole next-turn marker
    ("\\nInstruction:", "\\nQ:", ...) is. A generation stopped by the token limit while writing the delimiter
    or a marker ends in part of it ("\\n##", "\\nInstr"): that part is dropped and the answer counts as
    finished. ``truncated`` is set only when the token limit cut the answer itself."""
    text = raw
    had_delimiter = delimiter in text
    if had_delimiter:
        text = text.split(delimiter, 1)[0]
    cut = [text.find(m) for m in markers if m in text]
    ran_on = bool(cut)
    if cut:
        text = text[: min(cut)]
    partial = False
    if not (had_delimiter or ran_on):
        text, partial = _strip_partial_marker(text.rstrip(), delimiter, hit_token_limit, markers)
    truncated = hit_token_limit and not (had_delimiter or ran_on or partial)
    return Cleaned(text=text.strip(), had_delimiter=had_delimiter, ran_on=ran_on, truncated=truncated)


def _strip_partial_marker(text: str, delimiter: str, hit_token_limit: bool,
                          markers: tuple[str, ...] = NEXT_TURN_MARKERS) -> tuple[str, bool]:
    """Drop a started-but-unfinished delimiter on a line of its own ("answer\\n##"), and, when the token limit
    stopped generation, a started next-turn marker ("answer\\nInstr"). Text that merely ends in a delimiter
    character ("I like C#") is kept."""
    for n in range(len(delimiter) - 1, 0, -1):
        part = delimiter[:n]
        if text == part or text.endswith("\n" + part):
            return text[:-n], True
    if hit_token_limit:
        for marker in markers:
            for n in range(len(marker) - 1, 3, -1):  # the newline and 3+ characters: "\nRed" is not "\nResponse:"
                if text.endswith(marker[:n]):
                    return text[:-n], True
    return text, False


def leaks_delimiter(text: str, delimiter: str) -> bool:
    return delimiter in text or any(m.strip() in text for m in NEXT_TURN_MARKERS[:1])


def is_valid(cleaned: Cleaned, delimiter: str, min_words: int = 1) -> bool:
    """A response we would train on: has content, and no delimiter or next-turn residue."""
    words = re.findall(r"\w+", cleaned.text)
    return len(words) >= min_words and not leaks_delimiter(cleaned.text, delimiter)
