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
from .lib.params import ModelParams, load_params
from .lib.records import Instruction, Task, dump, read_jsonl

TASKS = Path("data/tasks.jsonl")
CONSTRAINTS = Path("data/constraints.yaml")
TRAIN_OUT = Path("data/instructions/train.jsonl")
EVAL_OUT = Path("data/instructions/eval.jsonl")

# Self-instruct sampling: varied proposals, a list continuation of a few items; a blank line ends the list.
SELF_INSTRUCT_SETTINGS = dict(max_new_tokens=96, temperature=0.9, top_p=0.95, repetition_penalty=1.1, batch_size=16)
SELF_INSTRUCT_STOPS = ("\n\n",)

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


def model_generate_fn(model_params: ModelParams, seed: int, count: int) -> self_instruct.GenerateFn:
    """The base model (models/base, through the clean loader) continuing numbered task lists. The model is
    loaded on the first call, so nothing is loaded unless self-instruct actually asks for text."""
    from .lib.generation import GenerationSettings, generate
    from .lib.model_session import open_model

    loaded: list = []
    calls = 0

    def generate_fn(prompts: list[str]) -> list[str]:
        nonlocal calls
        if not loaded:
            try:
                loaded.extend(open_model(model_params)[:2])
            except UserError as err:
                raise UserError(f"instructions.self_instruct_count={count} needs the base model: {err}") from None
        model, tokenizer = loaded
        calls += 1  # a new seed per round, so a prompt drawn again is continued differently
        settings = GenerationSettings(seed=seed * 1000 + calls, **SELF_INSTRUCT_SETTINGS)
        samples = generate(model, tokenizer, prompts, settings, stop_strings=SELF_INSTRUCT_STOPS,
                           desc=f"self-instruct round {calls}")
        return [s[0].text for s in samples]

    return generate_fn


@stage_main
def main() -> None:
    remove_outputs(TRAIN_OUT, EVAL_OUT)
    all_params = load_params()
    params = all_params.instructions
    tasks = read_tasks(TASKS)
    config = read_constraints(CONSTRAINTS)

    tasks, dropped = compose.dedupe_tasks(tasks, params.near_duplicate_threshold)
    train_pool, eval_pool = compose.split_tasks(tasks, params.seed, params.eval_task_fraction)
    proposed: list[Task] = []
    if params.self_instruct_count > 0:
        # Model-proposed tasks join the train pool only (never eval), after a near-duplicate filter against
        # every curated task (eval pool included) and against each other.
        generate_fn = model_generate_fn(all_params.model, params.seed, params.self_instruct_count)
        proposed = self_instruct.generate_candidate_tasks(
            params, params.self_instruct_count, existing=tasks, generate_fn=generate_fn)
        train_pool += proposed

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
    if params.self_instruct_count > 0:
        print(f"self-instruct: {len(proposed)} of {params.self_instruct_count} requested tasks proposed by the model "
              "and kept after filtering")
    for task, twin in dropped:
        print(f"  dropped {task.task_id} (near-duplicate of {twin.task_id})")
    print(summary(f"train -> {TRAIN_OUT}", train))
    print(summary(f"eval  -> {EVAL_OUT}", evals))


if __name__ == "__main__":
    main()
