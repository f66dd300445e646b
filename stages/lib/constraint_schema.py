"""The schema of data/constraints.yaml: how each verifiable instruction id is phrased, which tasks it suits
and how its kwargs are drawn. ``parse_constraints`` checks the file before any instruction is composed, and
names the id or key at fault: a typo here would otherwise surface much later as an unscorable instruction.
"""
from __future__ import annotations

import re
import string
from typing import Any, Iterable, Optional

from pydantic import Field, ValidationError, model_validator

from .errors import UserError
from .paths import CONSTRAINTS
from .schema import Strict, describe_errors


class TaskWordsSpec(Strict):
    """Words taken from the task's own text: a natural answer tends to use them, so a small model can
    satisfy "include the word X" without going off topic."""

    k: int = Field(1, ge=1)
    min_length: int = Field(4, ge=1)
    fallback: list[str] = Field(min_length=1)


class KwargSpec(Strict):
    """How one kwarg is drawn. Exactly one way must be given."""

    choices: Optional[list[Any]] = Field(None, min_length=1)
    range: Optional[tuple[int, int]] = None
    sample: Optional[list[str]] = Field(None, min_length=1)
    k: int = Field(1, ge=1, description="how many distinct words `sample` draws")
    task_word: Optional[TaskWordsSpec] = None
    task_words: Optional[TaskWordsSpec] = None
    task_text: bool = False
    depends_on: Optional[str] = None
    cases: Optional[dict[str, "KwargSpec"]] = None

    @model_validator(mode="after")
    def _one_way(self):
        ways = [
            name
            for name in ("choices", "range", "sample", "task_word", "task_words", "cases")
            if getattr(self, name) is not None
        ] + (["task_text"] if self.task_text else [])
        if len(ways) != 1:
            raise ValueError(
                "give exactly one of choices, range, sample, task_word, task_words, task_text, "
                f"depends_on+cases (got {ways or 'none'})"
            )
        if (self.cases is None) != (self.depends_on is None):
            raise ValueError("depends_on and cases go together")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range {list(self.range)} is empty")
        if self.sample is not None and self.k > len(self.sample):
            raise ValueError(f"k={self.k} but sample has only {len(self.sample)} words")
        return self


class ConstraintSpec(Strict):
    """One verifiable instruction id: how to phrase it, how to draw its kwargs, which tasks it suits."""

    weight: float = Field(1.0, gt=0.0)
    phrasings: list[str] = Field(min_length=1)
    kwargs: dict[str, KwargSpec] = Field(default_factory=dict)
    categories: Optional[list[str]] = Field(None, min_length=1)
    task_pattern: Optional[str] = None
    max_task_words: Optional[int] = Field(None, ge=1)
    # Render right after the task text, so "the request above" means the task and nothing else.
    render_first: bool = False


class ConstraintConfig(Strict):
    instructions: dict[str, ConstraintSpec] = Field(min_length=1)
    conflicts: list[tuple[str, str]] = Field(default_factory=list)

    def conflict_set(self) -> set[frozenset[str]]:
        return {frozenset(pair) for pair in self.conflicts}



def parse_constraints(raw: object, supported_ids: Iterable[str], source: str = str(CONSTRAINTS)) -> ConstraintConfig:
    """Validate the parsed YAML; every problem names ``source`` and the id or key at fault."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping with 'instructions' (and optionally 'conflicts')")
    try:
        config = ConstraintConfig.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(describe_errors(exc))
        raise UserError(f"{source}: invalid constraints:\n  {lines}") from None
    supported = set(supported_ids)
    for where, ids in [("instructions", list(config.instructions))] + [
        (f"conflicts[{i}]", list(pair)) for i, pair in enumerate(config.conflicts)
    ]:
        for iid in ids:
            if iid not in supported:
                raise UserError(
                    f"{source}: {where}: unknown instruction id {iid!r} (supported: {', '.join(sorted(supported))})"
                )
    for iid, spec in config.instructions.items():
        _check_spec(iid, spec, source)
    return config


def _check_spec(iid: str, spec: ConstraintSpec, source: str) -> None:
    """Catch mistakes pydantic cannot see: placeholders without a kwarg, bad regexes, dangling depends_on."""
    names = list(spec.kwargs)
    for phrasing in spec.phrasings:
        for field in _placeholders(phrasing, f"{source}: {iid}"):
            if field not in spec.kwargs:
                raise UserError(f"{source}: {iid}: phrasing {phrasing!r} uses {{{field}}} but kwargs has no {field!r}")
    if spec.task_pattern is not None:
        try:
            re.compile(spec.task_pattern)
        except re.error as exc:
            raise UserError(f"{source}: {iid}: task_pattern is not a valid regex ({exc})") from None
    for pos, (name, kw) in enumerate(spec.kwargs.items()):
        if kw.depends_on is not None and kw.depends_on not in names[:pos]:
            raise UserError(f"{source}: {iid}.kwargs.{name}: depends_on {kw.depends_on!r} must name an earlier kwarg")
        if kw.depends_on is not None and spec.kwargs[kw.depends_on].choices is not None:
            missing = {str(c) for c in spec.kwargs[kw.depends_on].choices} - set(kw.cases)
            if missing:
                raise UserError(f"{source}: {iid}.kwargs.{name}: no case for {sorted(missing)}")


def _placeholders(phrasing: str, where: str) -> list[str]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(phrasing) if field is not None]
    except ValueError as exc:
        raise UserError(f"{where}: phrasing {phrasing!r} is not a valid template ({exc})") from None

