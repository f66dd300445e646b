"""Reading the curated inputs under data/: tasks (data/tasks.jsonl) and constraints (data/constraints.yaml)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from . import checkers
from .constraint_schema import ConstraintConfig, parse_constraints
from .errors import UserError
from .records import Task, read_jsonl


def read_tasks(path: Path) -> list[Task]:
    tasks = read_jsonl(path, Task)
    counts = Counter(t.task_id for t in tasks)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise UserError(f"{path}: task_id must be unique; repeated: {', '.join(repeated[:10])}")
    return tasks


def read_constraints(path: Path) -> ConstraintConfig:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    return parse_constraints(raw, checkers.SUPPORTED_IDS, source=str(path))
