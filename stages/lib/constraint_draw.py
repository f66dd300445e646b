"""Drawing verifiable constraints for a task: which ids suit it, a weighted draw of compatible ids, their
kwargs from data/constraints.yaml's specs, and the check that the drawn values can be met together.

Every random choice comes from the ``random.Random`` the caller passes, so the same seed gives the same draw.
"""
from __future__ import annotations

import random
import re
from typing import Any, Iterable, Sequence

from .constraint_schema import ConstraintConfig, ConstraintSpec, KwargSpec, TaskWordsSpec
from .errors import UserError
from .near_duplicates import normalise
from .records import Task


_STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from into onto about above below after before
    this that these those there their them they then than what which who whom whose when where why how
    is are was were be been being do does did have has had will would can could should may might must
    your you yours our ours its it his her she he we us i me my mine not no yes all any each every some
    such very more most much many few also just only so too own same other write short explain describe
    list name give tell rewrite summarise summarize sentence sentences classify extract identify find
    following word words text message make turn please simple terms using three four two five one""".split()
)


def task_content_words(text: str, min_length: int) -> list[str]:
    """Distinct lowercase content words of a task, in order: candidates for keyword constraints."""
    seen: list[str] = []
    for word in re.findall(r"[A-Za-z]+", text):
        w = word.lower()
        if len(w) >= min_length and w not in _STOPWORDS and w not in seen:
            seen.append(w)
    return seen


def _draw_words(spec: TaskWordsSpec, task: Task, rng: random.Random) -> list[str]:
    pool = task_content_words(task.text, spec.min_length)
    picked = rng.sample(pool, min(spec.k, len(pool)))
    extra = [w for w in spec.fallback if w not in picked]
    picked += rng.sample(extra, min(spec.k - len(picked), len(extra)))
    return picked


def _draw_value(spec: KwargSpec, drawn: dict, task: Task, rng: random.Random) -> Any:
    if spec.cases is not None:
        return _draw_value(spec.cases[str(drawn[spec.depends_on])], drawn, task, rng)
    if spec.choices is not None:
        return rng.choice(spec.choices)
    if spec.range is not None:
        return rng.randint(*spec.range)
    if spec.sample is not None:
        return rng.sample(spec.sample, spec.k)
    if spec.task_word is not None:
        return _draw_words(spec.task_word.model_copy(update={"k": 1}), task, rng)[0]
    if spec.task_words is not None:
        return _draw_words(spec.task_words, task, rng)
    return task.text  # task_text


def draw_kwargs(spec: ConstraintSpec, task: Task, rng: random.Random) -> dict:
    """Draw each kwarg in declaration order, so a `depends_on` kwarg sees the value it depends on."""
    drawn: dict = {}
    for name, kw in spec.kwargs.items():
        drawn[name] = _draw_value(kw, drawn, task, rng)
    return drawn


def applies_to(spec: ConstraintSpec, task: Task) -> bool:
    """Whether a constraint makes sense for a task (e.g. "answer yes or no" only for yes/no questions)."""
    if spec.categories is not None and task.category not in spec.categories:
        return False
    if spec.task_pattern is not None and not re.search(spec.task_pattern, task.text):
        return False
    if spec.max_task_words is not None and len(task.text.split()) > spec.max_task_words:
        return False
    return True


def compatible(ids: Iterable[str], conflicts: set[frozenset[str]]) -> bool:
    ids = list(ids)
    return len(set(ids)) == len(ids) and not any(
        frozenset((a, b)) in conflicts for i, a in enumerate(ids) for b in ids[i + 1 :]
    )


def _required_texts(kwargs: Sequence[dict]) -> list[str]:
    """Text the response is obliged to contain, whatever else it says."""
    out: list[str] = []
    for kw in kwargs:
        for key in ("keywords",):
            out += kw.get(key, [])
        for key in ("keyword", "end_phrase", "prompt_to_repeat", "first_word", "postscript_marker", "section_spliter"):
            if key in kw:
                out.append(kw[key])
    return out


def _min_sentences(ids: Sequence[str], kwargs: Sequence[dict]) -> int:
    """Sentences any compliant response must have: each paragraph, section, bullet or response is at
    least one, and a postscript, end phrase or yes/no option adds one of its own."""
    units = [1]
    extra = 0
    for iid, kw in zip(ids, kwargs):
        units += [kw.get(k, 0) for k in ("num_paragraphs", "num_sections", "num_bullets")]
        if iid == "combination:two_responses":
            units.append(2)
        if iid in ("detectable_content:postscript", "startend:end_checker", "detectable_format:constrained_response"):
            extra += 1
    return max(units) + extra


def _min_capital_words(kwargs: Sequence[dict]) -> int:
    """All-capital words that required text forces into the response ("P.S." is two, "SECTION 1" one)."""
    count = 0
    for kw in kwargs:
        for text in _required_texts([kw]):
            caps = sum(1 for w in re.findall(r"[^\W\d_]+", text) if w.isupper())
            count += caps * (kw.get("num_sections", 1) if "section_spliter" in kw else 1)
    return count


def kwargs_consistent(task: Task, ids: Sequence[str], kwargs: Sequence[dict]) -> bool:
    """Reject draws whose values contradict each other or the task, which no response could satisfy:
    a forbidden word that the task or another constraint requires, a comma in required text under
    no_comma, required text already over a "less than" letter or capital-word budget, or a sentence
    limit below what the requested layout needs."""
    required = _required_texts(kwargs)
    required_words = {w for text in required + [task.text] for w in normalise(text).split()}
    for iid, kw in zip(ids, kwargs):
        if iid == "keywords:forbidden_words" and required_words & {w.lower() for w in kw["forbidden_words"]}:
            return False
        if iid == "punctuation:no_comma" and any("," in text for text in required):
            return False
        if iid == "keywords:letter_frequency" and kw["let_relation"] == "less than":
            if sum(text.lower().count(kw["letter"].lower()) for text in required) >= kw["let_frequency"]:
                return False
        if iid == "length_constraints:number_sentences" and kw["relation"] == "less than":
            if kw["num_sentences"] <= _min_sentences(ids, kwargs):
                return False
        if iid == "change_case:capital_word_frequency" and kw["capital_relation"] == "less than":
            # one spare for the pronoun "I", which counts as a capital word
            if _min_capital_words(kwargs) + 1 >= kw["capital_frequency"]:
                return False
    return True


def draw_constraints(
    task: Task, config: ConstraintConfig, rng: random.Random, max_constraints: int
) -> tuple[list[str], list[dict], list[str]]:
    """Pick 1..max_constraints compatible ids suited to the task (weighted), then their kwargs and a
    phrasing each. Returns (ids, kwargs, phrasings). Inconsistent kwargs are redrawn, then the ids."""
    eligible = [iid for iid in sorted(config.instructions) if applies_to(config.instructions[iid], task)]
    if not eligible:
        raise UserError(f"no constraint in constraints.yaml applies to task {task.task_id}")
    for _ in range(50):
        ids = pick_ids(eligible, config, rng, rng.randint(1, max_constraints))
        for _ in range(5):
            kwargs = [draw_kwargs(config.instructions[i], task, rng) for i in ids]
            if kwargs_consistent(task, ids, kwargs):
                phrasings = [rng.choice(config.instructions[i].phrasings) for i in ids]
                return ids, kwargs, phrasings
    raise UserError(f"could not draw a consistent set of constraints for task {task.task_id}: {task.text!r}")


def pick_ids(eligible: list[str], config: ConstraintConfig, rng: random.Random, want: int) -> list[str]:
    """Weighted draw without replacement that skips any id conflicting with those already chosen."""
    conflicts = config.conflict_set()
    ids: list[str] = []
    while len(ids) < want:
        options = [i for i in eligible if compatible(ids + [i], conflicts)]
        if not options:
            break
        ids.append(rng.choices(options, weights=[config.instructions[i].weight for i in options])[0])
    return sorted(ids, key=lambda i: not config.instructions[i].render_first)  # stable: others keep order
