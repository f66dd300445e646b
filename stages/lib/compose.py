"""Composing IFEval-style instructions from a pool of curated tasks: each task's text followed by the
phrasings of the constraints drawn for it (stages/lib/constraint_draw.py), never the same record twice.

Everything here is a pure function of its arguments (the caller reads the files), and every random
choice comes from a ``random.Random`` seeded by the caller, so the same seed gives the same records.
"""
from __future__ import annotations

import json
import random
import string
from collections import defaultdict
from typing import Sequence

from .constraint_draw import draw_constraints
from .constraint_schema import ConstraintConfig
from .errors import UserError
from .records import Instruction, Task


class _ListFormatter(string.Formatter):
    """Renders list kwargs as quoted words: {keywords} -> "a" and "b"; {forbidden_words:or} -> "a" or "b"."""

    def format_field(self, value, format_spec):
        if isinstance(value, list):
            quoted = [f'"{v}"' for v in value]
            joiner = format_spec or "and"
            return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" {joiner} " + quoted[-1]
        return super().format_field(value, format_spec)


_FORMATTER = _ListFormatter()


def render_prompt(task_text: str, phrasings: Sequence[str], kwargs: Sequence[dict]) -> str:
    """The task text followed by one sentence per constraint, on a single line."""
    parts = [task_text.strip()] + [_FORMATTER.format(p, **kw).strip() for p, kw in zip(phrasings, kwargs)]
    return " ".join(parts)


def _interleaved(tasks: Sequence[Task], rng: random.Random) -> list[Task]:
    """Tasks shuffled within each category, then dealt round-robin across categories, so the first n
    records of a pool cover the categories evenly."""
    by_cat: dict[str, list[Task]] = defaultdict(list)
    for task in sorted(tasks, key=lambda t: t.task_id):
        by_cat[task.category].append(task)
    cats = sorted(by_cat)
    rng.shuffle(cats)
    for cat in cats:
        rng.shuffle(by_cat[cat])
    order = []
    for i in range(max(len(v) for v in by_cat.values())):
        order += [by_cat[c][i] for c in cats if i < len(by_cat[c])]
    return order


def _signature(task_id: str, ids: Sequence[str], kwargs: Sequence[dict]) -> str:
    return json.dumps([task_id, sorted(zip(ids, [json.dumps(k, sort_keys=True) for k in kwargs]))])


def compose_instructions(
    tasks: Sequence[Task],
    config: ConstraintConfig,
    n: int,
    seed: int | str,
    max_constraints: int,
    key_base: int = 1,
) -> list[Instruction]:
    """``n`` distinct instructions from the pool ``tasks``, keys key_base..key_base+n-1.

    Each task is used once before any is reused; a reused task gets a constraint set it has not had
    (falling back to new kwargs), so records never repeat. Raises UserError if the pool cannot yield
    ``n`` distinct records."""
    if not tasks:
        raise UserError("cannot compose instructions from an empty task pool")
    rng = random.Random(f"compose:{seed}")
    used_sets: dict[str, set[frozenset[str]]] = defaultdict(set)
    seen: set[str] = set()
    records: list[Instruction] = []
    while len(records) < n:
        added = 0
        for task in _interleaved(tasks, rng):
            if len(records) >= n:
                break
            drawn = _draw_new(task, config, rng, max_constraints, used_sets[task.task_id], seen)
            if drawn is None:
                continue
            ids, kwargs, phrasings = drawn
            used_sets[task.task_id].add(frozenset(ids))
            seen.add(_signature(task.task_id, ids, kwargs))
            records.append(
                Instruction(
                    key=key_base + len(records),
                    prompt=render_prompt(task.text, phrasings, kwargs),
                    instruction_id_list=ids,
                    kwargs=kwargs,
                    category=task.category,
                    task_id=task.task_id,
                    task=task.text,
                )
            )
            added += 1
        if not added:
            raise UserError(
                f"could only compose {len(records)} distinct instructions from {len(tasks)} tasks, {n} requested; "
                "add tasks or constraints, or lower the count"
            )
    return records


def _draw_new(task, config, rng, max_constraints, used: set, seen: set, tries: int = 30):
    """A draw not seen before for this task; the first two thirds of the tries also insist on a new id set."""
    for attempt in range(tries):
        ids, kwargs, phrasings = draw_constraints(task, config, rng, max_constraints)
        if attempt < tries * 2 // 3 and frozenset(ids) in used:
            continue
        if _signature(task.task_id, ids, kwargs) not in seen:
            return ids, kwargs, phrasings
    return None
