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


@dataclass(frozen=True)
class Shot:
    instruction: str
    response: str


def zero_shot_prompt(instruction: str) -> str:
    """The format SFT trains on and every model is evaluated with."""
    return f"{INSTRUCTION} {instruction.strip()}\n{RESPONSE}"


def few_shot_prompt(instruction: str, shots: list[Shot], delimiter: str) -> str:
    """Examples, each closed by the delimiter, then the instruction to answer."""
    parts = [f"{zero_shot_prompt(s.instruction)} {s.response.strip()}\n{delimiter}\n\n" for s in shots]
    return "".join(parts) + zero_shot_prompt(instruction)


def stop_strings(delimiter: str) -> list[str]:
    return [delimiter, *NEXT_TURN_MARKERS]


def pick_shots(pool: list[Shot], n: int, instruction: str, rng: random.Random) -> list[Shot]:
    """``n`` examples from the pool, never the instruction itself."""
    candidates = [s for s in pool if s.instruction.strip() != instruction.strip()]
    return rng.sample(candidates, min(n, len(candidates)))


def as_completion(text: str) -> str:
    """A response as stored after ``Response:``: one space, then the text."""
    return " " + text.strip()
