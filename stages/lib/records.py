"""Schemas for every artifact record, and the JSONL reader that checks them.

A malformed record stops the stage with the file, the line and the field at fault: bytes that are not
UTF-8, text that is not JSON, NaN or Infinity (not JSON, though Python's parser accepts them), a field
named twice, nesting deeper than any record needs, a blank prompt, or a key that an earlier record
already used (the report pairs the models' answers by key).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar, Iterable, Literal, Optional, Type, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError
from .schema import Strict, describe_errors

MAX_DEPTH = 32  # IFEval records nest 3 levels; deeper input is an accident (or an attack on the parser)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("is blank (only whitespace)")
    return text


Text = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class Record(Strict):
    unique_key: ClassVar[bool] = False  # no two records of a file may share their `key`


class Task(Record):
    """A curated task under data/: what to do, before any verifiable constraint is attached."""

    task_id: Text
    category: Text
    text: Text


class Instruction(Record):
    """IFEval's input format (key, prompt, instruction_id_list, kwargs) plus our category and task id."""

    model_config = ConfigDict(extra="ignore")  # IFEval files may carry fields we do not use
    unique_key: ClassVar[bool] = True

    key: int | str
    prompt: Text
    instruction_id_list: list[str]
    kwargs: list[dict]
    category: str = "ifeval"
    task_id: Optional[str] = None
    task: Optional[str] = None  # the task's text before constraints were attached (back-translation reuses it)

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

    instruction: Text
    response: Text
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

    unique_key: ClassVar[bool] = True

    prompt: Text  # zero-shot, what SFT trains on and evaluation uses
    completion: Text
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
    prompt: Text
    chosen: Text
    rejected: Text
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

    unique_key: ClassVar[bool] = True

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


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (write a finite number, or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} does not fit a 64-bit float (it would read as infinity)")
    return value


def _no_repeated_fields(pairs: list[tuple[str, object]]) -> dict:
    seen = {}
    for name, value in pairs:
        if name in seen:
            raise ValueError(f"field {name!r} appears twice in one object")
        seen[name] = value
    return seen


def _depth(value) -> int:
    """How deeply lists and objects nest, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json_line(raw: bytes, where: str):
    """One JSONL line as a Python object; a UserError that starts with ``where`` (file:line) otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the line is {raw[exc.start]:#04x}); "
                        "save the file as UTF-8") from None
    try:
        obj = json.loads(text.lstrip("\ufeff"), parse_constant=_refuse_constant, parse_float=_finite_float,
                         object_pairs_hook=_no_repeated_fields)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read (records nest at most {MAX_DEPTH} levels)") from None
    if _depth(obj) > MAX_DEPTH:
        raise UserError(f"{where}: nested {_depth(obj)} levels deep; records nest at most {MAX_DEPTH}")
    return obj


def read_jsonl(path: str | Path, record_type: Type[R], *, allow_empty: bool = False) -> list[R]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open("rb") as fh:
        return parse_records(fh, str(path), record_type, allow_empty=allow_empty)


def parse_records(lines: Iterable[bytes], source: str, record_type: Type[R], *, allow_empty: bool = False) -> list[R]:
    """Records of ``record_type`` from JSONL lines; ``source`` names the file (and revision) in errors."""
    records: list[R] = []
    key_lines: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        raw = parse_json_line(line, f"{source}:{lineno}")
        if not isinstance(raw, dict):
            raise UserError(f"{source}:{lineno}: expected a JSON object, got {type(raw).__name__}")
        try:
            record = record_type.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(describe_errors(exc, root="record"))
            raise UserError(f"{source}:{lineno}: invalid {record_type.__name__} record: {problems}") from None
        if record_type.unique_key:
            # 1 and "1" are one key once written out, so they count as one here.
            first = key_lines.setdefault(str(record.key), lineno)
            if first != lineno:
                raise UserError(f"{source}:{lineno}: key {record.key!r} was already used on line {first}; "
                                "every record needs its own key")
        records.append(record)
    if not records and not allow_empty:
        raise UserError(f"{source}: no records (the file is empty)")
    return records


def dump(records: list[Record]) -> list[dict]:
    return [r.model_dump(mode="json") for r in records]
