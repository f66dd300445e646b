"""Schemas for every artifact record, and the JSONL reader that checks them.

A malformed record stops the stage with the file, the line and the field at fault.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Task(Record):
    """A curated task under data/: what to do, before any verifiable constraint is attached."""

    task_id: str = Field(min_length=1)
    category: str = Field(min_length=1)
    text: str = Field(min_length=1)


class Instruction(Record):
    """IFEval's input format (key, prompt, instruction_id_list, kwargs) plus our category and task id."""

    model_config = ConfigDict(extra="ignore")  # IFEval files may carry fields we do not use

    key: int | str
    prompt: str = Field(min_length=1)
    instruction_id_list: list[str]
    kwargs: list[dict]
    category: str = "ifeval"
    task_id: Optional[str] = None

    @model_validator(mode="after")
    def _aligned(self):
        if len(self.kwargs) != len(self.instruction_id_list):
            raise ValueError(
                f"kwargs has {len(self.kwargs)} entries but instruction_id_list has "
                f"{len(self.instruction_id_list)}; they must align one to one"
            )
        return self


class FewShotExample(Record):
    """A hand-written example for completion-style few-shot prompts (data/fewshot.jsonl)."""

    instruction: str = Field(min_length=1)
    response: str = Field(min_length=1)
    instruction_id_list: list[str] = []
    kwargs: list[dict] = []


# Where an SFT record's response came from (generate_sft's routes, stages/lib/sft_routes.py):
#   model           a sampled response that passes every constraint of its instruction
#   revised         the base model's revision of its own failing draft, told the checker's findings; passes
#   backtranslated  a sampled response with an instruction rewritten to the constraints it already satisfies
#   placeholder     no valid response: a fixed text, off by default, never counted as passing
SOURCES = ("model", "revised", "backtranslated", "placeholder")


class SftExample(Record):
    """One SFT training record: TRL's prompt/completion format, plus provenance and checker scores."""

    prompt: str = Field(min_length=1)  # zero-shot, what SFT trains on and evaluation uses
    completion: str = Field(min_length=1)
    generation_prompt: str  # the exact prompt (few-shot, or revision) that produced the completion
    key: int | str
    instruction: str
    instruction_id_list: list[str]
    kwargs: list[dict]
    category: str
    source: Literal[SOURCES]
    strict_score: float = Field(ge=0.0, le=1.0)
    truncated: bool
    sample_seed: int  # the generation seed of the call that drew this completion (one per round)
    sample_index: int  # the sample's index within that call (-1 for a placeholder)
    task_id: Optional[str] = None
    original_instruction: Optional[str] = None  # back-translated: the instruction the response was drawn for


class PreferencePair(Record):
    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    chosen_score: float
    rejected_score: float
    margin: float
    rejected_type: str
    chosen_source: Literal["policy", "sft_data"]  # an on-policy sample that passes, or the verified SFT response
    key: int | str
    category: str

    @model_validator(mode="after")
    def _distinct(self):
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are identical")
        return self


class EvalOutcome(Record):
    """One evaluated prompt: the response and, per instruction, strict and loose verdicts."""

    key: int | str
    category: str
    prompt: str
    response: str
    instruction_id_list: list[str]
    strict: list[bool]
    loose: list[bool]
    prompt_strict: bool
    prompt_loose: bool


R = TypeVar("R", bound=Record)


def read_jsonl(path: str | Path, record_type: Type[R], *, allow_empty: bool = False) -> list[R]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    records: list[R] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(raw, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(raw).__name__}")
            try:
                records.append(record_type.model_validate(raw))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors()
                )
                raise UserError(f"{path}:{lineno}: invalid {record_type.__name__} record: {problems}") from None
    if not records and not allow_empty:
        raise UserError(f"{path}: no records (the file is empty)")
    return records


def dump(records: list[Record]) -> list[dict]:
    return [r.model_dump(mode="json") for r in records]
