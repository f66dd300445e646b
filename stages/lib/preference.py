"""Scoring responses for preference pairs: the checkers, plus generate_sft's validity gates.

A pair's "better" is checked, not guessed: the score is the fraction of the prompt's constraints met
strictly, minus a penalty for each quality gate the response fails. The gates are simple heuristics,
stated here so a reader can judge them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import checkers
from .cleaning import is_valid, Cleaned
from .negatives import HEDGES, is_refusal

GATE_PENALTIES = {
    "invalid": 1.0,  # empty, or delimiter / next-turn residue
    "refusal": 1.0,  # declines a harmless instruction
    "truncated": 0.5,  # stopped at the token limit, or ends mid-sentence
    "off_topic": 0.5,  # shares no content word with the instruction
    "hedging": 0.5,  # padded with stock vague sentences
}
_STOPWORDS = frozenset("a an the and or of to in on for with is are be was were it this that your you write "
                       "give list name explain what how why which who describe answer response words".split())
_TERMINAL = re.compile(r"[.!?…\"'”)\]>*}`]$")


@dataclass(frozen=True)
class ScoredResponse:
    text: str
    score: float
    strict_fraction: float
    failed_gates: tuple[str, ...]


def content_words(text: str) -> set[str]:
    return {w for w in (x.lower() for x in checkers.words(text)) if len(w) > 3 and w not in _STOPWORDS}


def failed_gates(text: str, instruction: str, delimiter: str, hit_token_limit: bool = False) -> list[str]:
    gates = []
    cleaned = Cleaned(text=text, had_delimiter=False, ran_on=False, truncated=hit_token_limit)
    if not is_valid(cleaned, delimiter):
        gates.append("invalid")
    if is_refusal(text):
        gates.append("refusal")
    if hit_token_limit or (text.strip() and not _TERMINAL.search(text.strip())):
        gates.append("truncated")
    if content_words(instruction) and not content_words(instruction) & content_words(text):
        gates.append("off_topic")
    if sum(h in text for h in HEDGES) >= 2:
        gates.append("hedging")
    return gates


def score_response(text: str, instruction: str, ids: list[str], kwargs: list[dict], delimiter: str,
                   hit_token_limit: bool = False) -> ScoredResponse:
    strict = checkers.score(text, ids, kwargs, instruction).strict_fraction if text.strip() else 0.0
    gates = failed_gates(text, instruction, delimiter, hit_token_limit)
    score = strict - sum(GATE_PENALTIES[g] for g in gates)
    return ScoredResponse(text=text, score=round(score, 4), strict_fraction=strict, failed_gates=tuple(gates))
