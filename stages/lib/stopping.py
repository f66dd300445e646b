"""Stopping by string: whether a row's generated text now holds a stop string, decoded from a short tail."""
from __future__ import annotations

from typing import Sequence


class StopChecker:
    """Whether a row's generated text now contains a stop string. Decodes only a tail of the row, long enough
    to hold the longest stop string (every token is at least one byte)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        self.window = max((len(s.encode("utf-8")) for s in self.stop_strings), default=0) + 2

    def hits(self, rows: Sequence[list[int]]) -> list[bool]:
        if not self.stop_strings or not rows:
            return [False] * len(rows)
        tails = self.tokenizer.batch_decode([r[-self.window :] for r in rows], skip_special_tokens=True)
        return [any(s in t for s in self.stop_strings) for t in tails]
