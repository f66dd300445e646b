"""Splitting curated tasks into disjoint pools (train, then dev and test), stratified by category."""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

from .records import Task


def split_tasks(tasks: Sequence[Task], seed: int, eval_fraction: float) -> tuple[list[Task], list[Task]]:
    """Disjoint (train, eval) pools, stratified by category so eval covers every kind of task.

    A category with at least two tasks gives eval round(n * fraction) of them, but at least one and never
    all; a single-task category stays in train. Output order follows the input order."""
    rng = random.Random(f"split:{seed}")
    by_cat: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_cat[task.category].append(task)
    eval_ids: set[str] = set()
    for cat in sorted(by_cat):
        members = sorted(t.task_id for t in by_cat[cat])
        if len(members) < 2:
            continue
        n_eval = min(max(round(len(members) * eval_fraction), 1), len(members) - 1)
        eval_ids.update(rng.sample(members, n_eval))
    return [t for t in tasks if t.task_id not in eval_ids], [t for t in tasks if t.task_id in eval_ids]
