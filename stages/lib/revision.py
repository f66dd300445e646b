"""Critique and revise: the base model rewrites its own failing draft, told what the checker found.

The worked examples are made from our hand-written few-shot examples (data/fewshot.jsonl): one of an
example's constraints is broken by a minimal edit (negatives.format_violation, confirmed by the checkers),
and the example's own response is the revision. So every id an example shows has a worked revision, and no
revision text is written twice.
"""
from __future__ import annotations

import random

from . import negatives
from .findings import finding
from .prompts import RevisionShot, Shot


def revision_shots(shots: list[Shot], kwargs_of: dict[str, list[dict]], seed: int) -> list[RevisionShot]:
    """One worked revision per (example, constraint) that a minimal edit can break; deterministic in seed."""
    rng = random.Random(f"revision-shots:{seed}")
    out = []
    for shot in shots:
        ids, kwargs = list(shot.instruction_ids), kwargs_of[shot.instruction]
        for iid, kw in zip(ids, kwargs):
            broken = negatives.format_violation(shot.response, ids, kwargs, rng, only=iid)
            if broken is None:
                continue
            draft = broken[0]
            out.append(RevisionShot(shot.instruction, draft, (finding(iid, kw, draft),), shot.response, (iid,)))
    return out


def pick_revision_shots(pool: list[RevisionShot], n: int, instruction: str, failing_ids: list[str],
                        rng: random.Random) -> list[RevisionShot]:
    """``n`` worked revisions, those fixing the failing ids first (ties at random), never of this instruction;
    one per example instruction, the best match placed last."""
    candidates = [s for s in pool if s.instruction.strip() != instruction.strip()]
    rng.shuffle(candidates)
    wanted, chosen, used = set(failing_ids), [], set()
    while len(chosen) < n:
        options = [s for s in candidates if s.instruction not in used]
        if not options:
            break
        best = max(options, key=lambda s: len(wanted & set(s.instruction_ids)))
        chosen.append(best)
        used.add(best.instruction)
        wanted -= set(best.instruction_ids)
    return chosen[::-1]
