"""Stage make_instructions: curated tasks x verifiable constraints -> IFEval-format train and eval prompts.

    python -m stages.make_instructions

Reads params.yaml (instructions), data/tasks.jsonl and data/constraints.yaml; writes
data/instructions/train.jsonl and data/instructions/eval.jsonl. Tasks are split into disjoint pools
before any constraint is attached, so no eval task (or near-duplicate of one) is ever trained on.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from .lib import checkers, compose, self_instruct
from .lib.errors import UserError, stage_main
from .lib.io import remove_outputs, write_jsonl_atomic
from .lib.params import load_params
from .lib.records import Instruction, Task, dump, read_jsonl

TASKS = Path("data/tasks.jsonl")
CONSTRAINTS = Path("data/constraints.yaml")
TRAIN_OUT = Path("data/instructions/train.jsonl")
EVAL_OUT = Path("data/instructions/eval.jsonl")

# Eval keys start at 1 (like IFEval's small ints), train keys far above, so keys are unique across both
# files and each pool's keys do not move when the other pool's size changes.
EVAL_KEY_BASE = 1
TRAIN_KEY_BASE = 1_000_001


def read_tasks(path: Path) -> list[Task]:
    tasks = read_jsonl(path, Task)
    counts = Counter(t.task_id for t in tasks)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise UserError(f"{path}: task_id must be unique; repeated: {', '.join(repeated[:10])}")
    return tasks


def read_constraints(path: Path) -> compose.ConstraintConfig:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    return compose.parse_constraints(raw, checkers.SUPPORTED_IDS, source=str(path))


def validate_records(records: list[Instruction], pool: str) -> None:
    """Every composed kwargs must be scorable; a failure points back at constraints.yaml."""
    for rec in records:
        for iid, kw in zip(rec.instruction_id_list, rec.kwargs):
            try:
                checkers.validate_kwargs(iid, kw)
            except UserError as err:
                raise UserError(f"{CONSTRAINTS}: {pool} instruction key {rec.key} (task {rec.task_id}): {err}") from None


def summary(name: str, records: list[Instruction]) -> str:
    cats = Counter(r.category for r in records)
    n_ids = Counter(len(r.instruction_id_list) for r in records)
    tasks = len({r.task_id for r in records})
    return (
        f"{name}: {len(records)} instructions from {tasks} tasks; "
        f"categories {dict(sorted(cats.items()))}; constraints per prompt {dict(sorted(n_ids.items()))}"
    )


@stage_main
def main() -> None:
    remove_outputs(TRAIN_OUT, EVAL_OUT)
    params = load_params().instructions
    tasks = read_tasks(TASKS)
    config = read_constraints(CONSTRAINTS)

    tasks, dropped = compose.dedupe_tasks(tasks, params.near_duplicate_threshold)
    train_pool, eval_pool = compose.split_tasks(tasks, params.seed, params.eval_task_fraction)
    if params.self_instruct_count > 0:
        # HOOK: model-proposed tasks join the train pool only (never eval), after a near-duplicate
        # filter against every curated task. Pass generate_fn once stages/lib/generation.py exists.
        train_pool += self_instruct.generate_candidate_tasks(params, params.self_instruct_count, existing=tasks)

    train = compose.compose_instructions(
        train_pool, config, params.n_train, f"train:{params.seed}", params.max_constraints, TRAIN_KEY_BASE
    )
    evals = compose.compose_instructions(
        eval_pool, config, params.n_eval, f"eval:{params.seed}", params.max_constraints, EVAL_KEY_BASE
    )
    validate_records(train, "train")
    validate_records(evals, "eval")
    texts = {t.task_id: t.text for t in train_pool + eval_pool}
    compose.check_disjoint(train, evals, params.near_duplicate_threshold, task_texts=texts)

    try:
        write_jsonl_atomic(EVAL_OUT, dump(evals))
        write_jsonl_atomic(TRAIN_OUT, dump(train))
    except BaseException:
        remove_outputs(TRAIN_OUT, EVAL_OUT)  # both files or neither
        raise

    print(f"tasks: {len(tasks)} kept, {len(dropped)} near-duplicates dropped; pools train {len(train_pool)} / eval {len(eval_pool)}")
    for task, twin in dropped:
        print(f"  dropped {task.task_id} (near-duplicate of {twin.task_id})")
    print(summary(f"train -> {TRAIN_OUT}", train))
    print(summary(f"eval  -> {EVAL_OUT}", evals))


if __name__ == "__main__":
    main()
