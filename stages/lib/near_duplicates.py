"""Near-duplicate detection: two texts compared word by word after normalisation. Guards the split against
leakage (a held-out task and a train task that differ by a word) and self-instruct against repeats.
"""
from __future__ import annotations

import difflib
import re
from typing import Mapping, Optional, Sequence

from .errors import UserError
from .records import Instruction, Task


_PUNCT = re.compile(r"[^\w\s]|_")


def normalise(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: the form in which two prompts are compared."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def similarity(a: str, b: str) -> float:
    """Word-level difflib ratio of the normalised texts, in [0, 1]. Words rather than characters: one
    changed word in a ten-word task scores 0.9, while unrelated tasks of similar length stay low."""
    wa, wb = normalise(a).split(), normalise(b).split()
    if not wa and not wb:
        return 1.0
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    return matcher.ratio()


def _similar(a: list[str], b: list[str], threshold: float) -> Optional[float]:
    """The ratio if it reaches ``threshold``, else None; the cheap upper bounds skip most pairs."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
        return None
    ratio = matcher.ratio()
    return ratio if ratio >= threshold else None


def near_duplicate_pairs(left: Sequence[str], right: Sequence[str], threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, ratio) for every left[i] and right[j] at least ``threshold`` similar."""
    lw = [normalise(t).split() for t in left]
    rw = [normalise(t).split() for t in right]
    found = []
    for i, a in enumerate(lw):
        for j, b in enumerate(rw):
            ratio = _similar(a, b, threshold)
            if ratio is not None:
                found.append((i, j, ratio))
    return found


def dedupe_tasks(tasks: Sequence[Task], threshold: float) -> tuple[list[Task], list[tuple[Task, Task]]]:
    """Keep the first of each group of near-duplicate tasks; also return (dropped, kept twin) pairs so the
    caller can report them. Run before the split, so near-twins cannot land in different pools."""
    kept: list[Task] = []
    kept_words: list[list[str]] = []
    dropped: list[tuple[Task, Task]] = []
    for task in tasks:
        words = normalise(task.text).split()
        twin = next((k for k, w in zip(kept, kept_words) if _similar(words, w, threshold) is not None), None)
        if twin is None:
            kept.append(task)
            kept_words.append(words)
        else:
            dropped.append((task, twin))
    return kept, dropped


def dedupe_instructions(records: Sequence[Instruction]) -> list[Instruction]:
    """Drop records whose normalised prompt repeats an earlier one. Near-duplicates are allowed here on
    purpose: one task reused with different constraints is a near-duplicate by design."""
    seen: set[str] = set()
    out = []
    for rec in records:
        norm = normalise(rec.prompt)
        if norm not in seen:
            seen.add(norm)
            out.append(rec)
    return out


def check_disjoint(
    train: Sequence[Instruction],
    eval: Sequence[Instruction],
    threshold: float,
    task_texts: Optional[Mapping[str, str]] = None,
) -> None:
    """Raise UserError if train and eval share a task id or a near-duplicate task text.

    Task texts are compared rather than whole prompts, since shared constraint phrasings would make
    unrelated prompts look alike. A record whose task text is unknown (no task_id, or not in
    ``task_texts``) is compared by its whole prompt.
    """
    shared = sorted({r.task_id for r in train if r.task_id} & {r.task_id for r in eval if r.task_id})
    if shared:
        more = " ..." if len(shared) > 10 else ""
        raise UserError(f"train and eval share task ids: {', '.join(shared[:10])}{more}")
    texts = task_texts or {}
    left = _unique_texts(train, texts)
    right = _unique_texts(eval, texts)
    pairs = near_duplicate_pairs([t for t, _ in left], [t for t, _ in right], threshold)
    if pairs:
        i, j, ratio = max(pairs, key=lambda p: p[2])
        raise UserError(
            f"train and eval contain near-duplicate tasks ({len(pairs)} pair(s), threshold {threshold}); "
            f"e.g. train {left[i][1]} vs eval {right[j][1]} (similarity {ratio:.2f}): {left[i][0]!r} ~ {right[j][0]!r}"
        )


def _unique_texts(records: Sequence[Instruction], texts: Mapping[str, str]) -> list[tuple[str, str]]:
    """(text, label) per distinct task text; the label names the task id or the record key."""
    out: dict[str, str] = {}
    for r in records:
        if r.task_id and r.task_id in texts:
            out.setdefault(texts[r.task_id], f"task {r.task_id}")
        else:
            out.setdefault(r.prompt, f"key {r.key}" + (f" (task {r.task_id})" if r.task_id else ""))
    return list(out.items())
