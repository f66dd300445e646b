"""The completion-style prompt format, shared by data generation, training and evaluation.

No chat template: a base model continues ``Instruction: ...\\nResponse:``. Few-shot examples (ours,
from data/fewshot.jsonl) end with a text delimiter so the model learns where an answer stops.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

INSTRUCTION = "Instruction:"
RESPONSE = "Response:"
# Markers of a run-on into a next turn; a generation is cut at the first of them.
NEXT_TURN_MARKERS = ("\nInstruction:", "\nQ:", "\nResponse:", "\nQuestion:")
# Critique and revise: the draft, what the checker found wrong with it, and the revision the model writes.
DRAFT = "Draft:"
PROBLEMS = "Problems:"
REVISED = "Revised response:"
REVISION_MARKERS = ("\nDraft:", "\nProblems:", "\nRevised response:")


@dataclass(frozen=True)
class Shot:
    instruction: str
    response: str
    instruction_ids: tuple[str, ...] = ()


def zero_shot_prompt(instruction: str) -> str:
    """The format SFT trains on and every model is evaluated with."""
    return f"{INSTRUCTION} {instruction.strip()}\n{RESPONSE}"


def few_shot_prompt(instruction: str, shots: list[Shot], delimiter: str) -> str:
    """Examples, each closed by the delimiter, then the instruction to answer."""
    parts = [f"{zero_shot_prompt(s.instruction)} {s.response.strip()}\n{delimiter}\n\n" for s in shots]
    return "".join(parts) + zero_shot_prompt(instruction)


def stop_strings(delimiter: str) -> list[str]:
    return [delimiter, *NEXT_TURN_MARKERS]


@dataclass(frozen=True)
class RevisionShot:
    """A worked revision: a draft that breaks one constraint, the finding, and the response that obeys."""

    instruction: str
    draft: str
    problems: tuple[str, ...]
    revised: str
    instruction_ids: tuple[str, ...] = ()  # the ids the draft breaks


def _revision_block(instruction: str, draft: str, problems: tuple[str, ...] | list[str]) -> str:
    return (f"{INSTRUCTION} {instruction.strip()}\n{DRAFT} {draft.strip()}\n{PROBLEMS} {' '.join(problems)}\n"
            f"{REVISED}")


def revision_prompt(instruction: str, draft: str, problems: list[str], shots: list[RevisionShot],
                    delimiter: str) -> str:
    """Worked revisions, each closed by the delimiter, then the draft to revise."""
    parts = [f"{_revision_block(s.instruction, s.draft, s.problems)} {s.revised.strip()}\n{delimiter}\n\n"
             for s in shots]
    return "".join(parts) + _revision_block(instruction, draft, problems)


def revision_stop_strings(delimiter: str) -> list[str]:
    return [delimiter, *NEXT_TURN_MARKERS, *REVISION_MARKERS]


def pick_shots(pool: list[Shot], n: int, instruction: str, rng: random.Random,
               instruction_ids: tuple[str, ...] | list[str] = ()) -> list[Shot]:
    """``n`` examples from the pool, never the instruction itself.

    Examples that show the constraints asked for come first: each pick covers the most of the instruction's
    ids not yet shown (ties drawn at random), so a small model sees the format it must produce. Once every
    id is shown the rest are drawn at random. The best match is placed last, nearest to the instruction."""
    candidates = [s for s in pool if s.instruction.strip() != instruction.strip()]
    rng.shuffle(candidates)
    wanted, chosen = set(instruction_ids), []
    while candidates and len(chosen) < n:
        best = max(candidates, key=lambda s: (len(wanted & set(s.instruction_ids)), len(set(instruction_ids) & set(s.instruction_ids))))
        chosen.append(best)
        candidates.remove(best)
        wanted -= set(best.instruction_ids)
    return chosen[::-1]


def as_completion(text: str) -> str:
    """A response as stored after ``Response:``: one space, then the text."""
    return " " + text.strip()
