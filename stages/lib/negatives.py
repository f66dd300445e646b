"""Synthetic rejected responses, typed and weighted.

Types: a minimal edit (the chosen response edited to break exactly one of its prompt's constraints, which
the checkers confirm: the pair differs on the constraint and little else); an unwarranted refusal; an
off-topic answer (another prompt's response); a verbose, vague padding of the answer; a truncation
mid-sentence.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Optional

from . import checkers

NEGATIVE_TYPES = ("minimal_edit", "refusal", "off_topic", "verbose", "truncated")

REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I am not able to answer this question.",
    "Unfortunately I cannot provide a response to that.",
    "As an AI, I prefer not to answer this.",
)
HEDGES = (
    "There are many different ways to look at this, and it really depends on a lot of factors.",
    "In general, it is important to consider all of the various aspects involved.",
    "Of course, everyone may have their own opinion about this kind of thing.",
    "It is worth noting that things can vary quite a bit from case to case.",
)


_REFUSAL_START = re.compile(r"\s*(i'm sorry|i am sorry|i cannot|i can't|i can not|as an ai)", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """Declines instead of answering: one of our stock refusals, or an answer that opens like one."""
    lowered = text.lower()
    return any(r.lower() in lowered for r in REFUSALS) or bool(_REFUSAL_START.match(text))


def draw_types(weights: dict[str, float], n: int, rng: random.Random) -> list[str]:
    """``n`` negative types drawn with probability proportional to their weights."""
    types = [t for t in NEGATIVE_TYPES if weights.get(t, 0) > 0]
    return rng.choices(types, weights=[weights[t] for t in types], k=n)


def refusal(rng: random.Random) -> str:
    return rng.choice(REFUSALS)


def verbose(text: str, rng: random.Random) -> str:
    padding = rng.sample(HEDGES, 3)
    return " ".join([padding[0], padding[1], text.strip(), padding[2]])


def truncated(text: str, rng: random.Random) -> Optional[str]:
    """Cut mid-sentence, between 30% and 60% of the words, with no closing punctuation."""
    words = text.split()
    if len(words) < 6:
        return None
    cut = max(2, int(len(words) * rng.uniform(0.3, 0.6)))
    return " ".join(words[:cut]).rstrip(".,;:!?")


def off_topic(other_responses: list[str], own: str, rng: random.Random) -> Optional[str]:
    choices = [r for r in other_responses if r.strip() != own.strip()]
    return rng.choice(choices) if choices else None


def _edits(kwargs: dict) -> list[Callable[[str], str]]:
    """Generic edits, plus ones aimed at a constraint's own kwargs (keywords, forbidden words)."""
    edits: list[Callable[[str], str]] = [
        str.upper,
        str.lower,
        lambda t: t + " However, that is not all.",
        lambda t: "Sure, here you go, " + t,
        lambda t: re.sub(r"[*\"<>\[\]{}]", "", t),
        lambda t: "\n".join(t.splitlines()[1:]) if "\n" in t else t,
        lambda t: "\n".join(t.splitlines()[:-1]) if "\n" in t else t,
        lambda t: " ".join(t.split()[: max(1, len(t.split()) // 3)]),
        lambda t: (t + " ") * 4,
        lambda t: t.replace("******", "").replace("***", ""),
    ]
    for word in kwargs.get("keywords") or ([kwargs["keyword"]] if kwargs.get("keyword") else []):
        edits.append(lambda t, w=word: re.sub(re.escape(w), "", t, flags=re.IGNORECASE))
    for word in kwargs.get("forbidden_words") or []:
        edits.append(lambda t, w=word: f"{t} ({w})")
    return edits


def format_violation(text: str, ids: list[str], kwargs: list[dict], rng: random.Random,
                     only: Optional[str] = None) -> Optional[tuple[str, str]]:
    """Edit ``text`` so exactly one constraint it meets now fails (``only`` that id, if given); returns
    (text, broken id) or None."""
    before = checkers.score(text, ids, kwargs).strict
    targets = [i for i, ok in enumerate(before) if ok and (only is None or ids[i] == only)]
    rng.shuffle(targets)
    for target in targets:
        edits = _edits(kwargs[target])
        rng.shuffle(edits)
        for edit in edits:
            candidate = edit(text).strip()
            if not candidate or candidate == text:
                continue
            after = checkers.score(candidate, ids, kwargs).strict
            if not after[target] and all(after[i] == before[i] for i in range(len(ids)) if i != target):
                return candidate, ids[target]
    return None
