"""Constraint back-translation: write into an instruction the constraints its response already satisfies.

When no sample and no revision of an instruction passes its own constraints, the best response still
answers the task. Back-translation keeps that response and gives it an instruction it does obey: the task
text plus 1..max_constraints constraints from data/constraints.yaml whose kwargs the response satisfies
(checked by the checkers, never assumed), phrased with the same templates as every other instruction.
The one derived kwarg is an end phrase: the response's own last sentence becomes "end with ...".
"""
from __future__ import annotations

import itertools
import random
from typing import Any, Iterator

from . import checkers
from .compose import render_prompt
from .constraint_draw import applies_to, kwargs_consistent, pick_ids, task_content_words
from .constraint_schema import ConstraintConfig, ConstraintSpec, KwargSpec
from .records import Task

_MAX_END_PHRASE_WORDS = 8


def _values(spec: KwargSpec, drawn: dict, task: Task, response: str) -> list[Any]:
    """Every value a kwarg spec can take that is worth checking against this response."""
    if spec.cases is not None:
        return _values(spec.cases[str(drawn[spec.depends_on])], drawn, task, response)
    if spec.choices is not None:
        return list(dict.fromkeys(spec.choices))
    if spec.range is not None:
        lo, hi = spec.range
        return list(range(lo, hi + 1))
    if spec.sample is not None:
        return [list(c) for c in itertools.combinations(spec.sample, spec.k)]
    words_spec = spec.task_word or spec.task_words
    if words_spec is not None:
        present = [w for w in task_content_words(task.text, words_spec.min_length) + list(words_spec.fallback)
                   if w.lower() in response.lower()]
        present = list(dict.fromkeys(present))
        if spec.task_word is not None:
            return present
        return [list(c) for c in itertools.combinations(present, min(words_spec.k, len(present)))] if present else []
    return [task.text]  # task_text


def _kwarg_sets(spec: ConstraintSpec, task: Task, response: str) -> Iterator[dict]:
    """The cartesian product of the spec's kwargs, each drawn in order so depends_on sees its value."""
    def expand(names: list[str], drawn: dict) -> Iterator[dict]:
        if not names:
            yield dict(drawn)
            return
        name, rest = names[0], names[1:]
        for value in _values(spec.kwargs[name], drawn, task, response):
            yield from expand(rest, drawn | {name: value})

    yield from expand(list(spec.kwargs), {})


def end_phrase_of(response: str) -> str | None:
    """The response's last sentence, when it is short enough to ask for word for word."""
    parts = checkers.sentences(response)
    if not parts:
        return None
    last = parts[-1].strip()
    n_words = len(checkers.words(last))
    return last if 2 <= n_words <= _MAX_END_PHRASE_WORDS and response.strip().endswith(last) else None


def satisfied(task: Task, response: str, config: ConstraintConfig, max_sets_per_id: int = 200) -> dict[str, list[dict]]:
    """For each constraint id that suits the task, the kwarg sets the response already satisfies."""
    found: dict[str, list[dict]] = {}
    for iid in sorted(config.instructions):
        spec = config.instructions[iid]
        if not applies_to(spec, task):
            continue
        candidates = list(itertools.islice(_kwarg_sets(spec, task, response), max_sets_per_id))
        if iid == "startend:end_checker":
            phrase = end_phrase_of(response)
            candidates = [{"end_phrase": phrase}] if phrase else []
        ok = [kw for kw in candidates if checkers.score(response, [iid], [kw]).prompt_strict]
        if ok:
            found[iid] = ok
    return found


def backtranslate(task: Task, response: str, config: ConstraintConfig, rng: random.Random,
                  max_constraints: int) -> tuple[str, list[str], list[dict]] | None:
    """(prompt, ids, kwargs) of an instruction the response obeys, or None if no constraint fits.

    Ids are drawn by their constraints.yaml weights among those satisfied, without conflicts; the whole set
    is checked once more against the response, as any other SFT record is."""
    found = satisfied(task, response, config)
    if not found:
        return None
    want = rng.randint(1, max_constraints)
    for _ in range(20):
        ids = pick_ids(list(found), config, rng, want)
        kwargs = [rng.choice(found[i]) for i in ids]
        if not kwargs_consistent(task, ids, kwargs):
            continue
        if not checkers.score(response, ids, kwargs).prompt_strict:
            continue
        phrasings = [rng.choice(config.instructions[i].phrasings) for i in ids]
        return render_prompt(task.text, phrasings, kwargs), ids, kwargs
    return None
