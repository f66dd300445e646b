"""Accuracy summaries of evaluated prompts, and the alignment check that paired comparisons need.

Accuracies follow IFEval: prompt level (every instruction of a prompt followed) and instruction
level (each instruction counted on its own), each judged strictly and loosely. Every entry has
the same flat shape, ``{"accuracy", "n", "ci_low", "ci_high"}`` with a Wilson interval, so
``dvc metrics diff`` shows one readable row per number.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from .errors import UserError
from .records import EvalOutcome
from .stats import wilson_interval

PROMPT_MEASURES = ("prompt_strict", "prompt_loose")


def accuracy_entry(successes: int, n: int, confidence: float = 0.95) -> dict:
    """``{"accuracy", "n", "ci_low", "ci_high"}`` for ``successes`` out of ``n`` (n >= 1)."""
    low, high = wilson_interval(successes, n, confidence)
    return {"accuracy": successes / n, "n": n, "ci_low": low, "ci_high": high}


def _check_consistent(outcome: EvalOutcome) -> None:
    """Reject a record whose verdict lists do not line up or contradict its prompt-level verdicts."""
    n = len(outcome.instruction_id_list)
    if len(outcome.strict) != n or len(outcome.loose) != n:
        raise UserError(
            f"outcome key {outcome.key!r}: {n} instruction ids but {len(outcome.strict)} strict and "
            f"{len(outcome.loose)} loose verdicts; they must align one to one"
        )
    if outcome.prompt_strict != all(outcome.strict) or outcome.prompt_loose != all(outcome.loose):
        raise UserError(
            f"outcome key {outcome.key!r}: prompt_strict/prompt_loose must equal "
            "'all instructions followed' under the strict/loose verdicts"
        )


def _measures(outcomes: list[EvalOutcome], confidence: float) -> dict:
    """Prompt- and instruction-level accuracy of one group; instruction entries only if it has any."""
    n_prompts = len(outcomes)
    n_instr = sum(len(o.strict) for o in outcomes)
    result = {
        "prompt_strict": accuracy_entry(sum(o.prompt_strict for o in outcomes), n_prompts, confidence),
        "prompt_loose": accuracy_entry(sum(o.prompt_loose for o in outcomes), n_prompts, confidence),
    }
    if n_instr:
        result["instruction_strict"] = accuracy_entry(sum(sum(o.strict) for o in outcomes), n_instr, confidence)
        result["instruction_loose"] = accuracy_entry(sum(sum(o.loose) for o in outcomes), n_instr, confidence)
    return result


def _by_instruction(outcomes: Iterable[EvalOutcome], confidence: float) -> dict:
    """Strict and loose accuracy of each instruction id, over every prompt that carries it."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # strict hits, loose hits, n
    for o in outcomes:
        for inst_id, strict, loose in zip(o.instruction_id_list, o.strict, o.loose):
            counts[inst_id][0] += strict
            counts[inst_id][1] += loose
            counts[inst_id][2] += 1
    return {
        inst_id: {"strict": accuracy_entry(s, n, confidence), "loose": accuracy_entry(l, n, confidence)}
        for inst_id, (s, l, n) in sorted(counts.items())
    }


def summarize(outcomes: list[EvalOutcome], confidence: float = 0.95) -> dict:
    """Accuracy overall, per category and per instruction id, each with a Wilson interval.

    Shape::

        {"n_prompts": N, "n_instructions": M,
         "overall":        {"prompt_strict": E, "prompt_loose": E, "instruction_strict": E, "instruction_loose": E},
         "by_category":    {category: {same four keys as overall}},
         "by_instruction": {instruction_id: {"strict": E, "loose": E}}}

    where ``E = {"accuracy", "n", "ci_low", "ci_high"}``. A group with no instructions has no
    instruction-level keys. Raises UserError on an empty list or an inconsistent record.
    """
    if not outcomes:
        raise UserError("no evaluated prompts to summarize")
    for o in outcomes:
        _check_consistent(o)
    groups: dict[str, list[EvalOutcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.category].append(o)
    return {
        "n_prompts": len(outcomes),
        "n_instructions": sum(len(o.strict) for o in outcomes),
        "overall": _measures(outcomes, confidence),
        "by_category": {cat: _measures(group, confidence) for cat, group in sorted(groups.items())},
        "by_instruction": _by_instruction(outcomes, confidence),
    }


def _index_by_key(label: str, outcomes: list[EvalOutcome]) -> dict:
    index: dict = {}
    for o in outcomes:
        if o.key in index:
            raise UserError(f"{label}: prompt key {o.key!r} appears more than once")
        index[o.key] = o
    return index


def _examples(keys: set, limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in sorted(keys, key=str)[:limit])
    return shown + (", ..." if len(keys) > limit else "")


def align_outcomes(runs: dict[str, list[EvalOutcome]]) -> tuple[list, dict[str, list[EvalOutcome]]]:
    """Put several runs' outcomes in one shared prompt order, after checking they are comparable.

    ``runs`` maps a label (a model name, a revision) to its outcomes. Every run must hold each
    prompt key exactly once, the same set of keys, and for each key the same prompt text and
    category; otherwise a UserError names the runs and example keys. Returns the sorted keys and,
    per label, the outcomes in that order, so position i means the same prompt in every run.
    """
    indexes = {label: _index_by_key(label, outcomes) for label, outcomes in runs.items()}
    (ref_label, ref), *others = indexes.items()
    for label, index in others:
        missing, extra = set(ref) - set(index), set(index) - set(ref)
        problems = []
        if missing:
            problems.append(f"{label} lacks {len(missing)} of {ref_label}'s prompt keys ({_examples(missing)})")
        if extra:
            problems.append(f"{label} has {len(extra)} prompt keys that {ref_label} lacks ({_examples(extra)})")
        if problems:
            raise UserError("runs evaluated different prompts: " + "; ".join(problems))
        changed = {k for k, o in index.items() if (o.prompt, o.category) != (ref[k].prompt, ref[k].category)}
        if changed:
            raise UserError(
                f"runs evaluated different prompts: {label} and {ref_label} differ in prompt text or "
                f"category for {len(changed)} keys ({_examples(changed)})"
            )
    keys = sorted(ref, key=str)
    return keys, {label: [index[k] for k in keys] for label, index in indexes.items()}
