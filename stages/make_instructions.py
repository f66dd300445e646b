"""Stage make_instructions: curated tasks x verifiable constraints -> IFEval-format train and eval prompts.

    python -m stages.make_instructions

Reads params.yaml (make_instructions; model too when self-instruct asks the base model), data/tasks.jsonl
and data/constraints.yaml; writes data/instructions/train.jsonl and the two held-out suites
data/suites/dev.jsonl (for choosing defaults) and data/suites/test.jsonl (never tuned on). Tasks are split
into three disjoint pools before any constraint is attached, so no held-out task (or near-duplicate of one)
is ever trained on, and dev and test share no task either.
"""
from __future__ import annotations

from collections import Counter

from .lib import checkers, self_instruct
from .lib.compose import compose_instructions
from .lib.curated import read_constraints, read_tasks
from .lib.errors import UserError, stage_main
from .lib.io import remove_outputs, write_jsonl_atomic
from .lib.near_duplicates import check_disjoint, dedupe_tasks
from .lib.params import ModelParams, load_params
from .lib.paths import CONSTRAINTS, TASKS, TRAIN_INSTRUCTIONS, suite_path
from .lib.records import Instruction, Task, dump
from .lib.task_split import split_tasks

OUTPUTS = (TRAIN_INSTRUCTIONS, suite_path("dev"), suite_path("test"))  # train, dev, test: all written or none

# Self-instruct sampling: varied proposals, a list continuation of a few items; a blank line ends the list.
SELF_INSTRUCT_SETTINGS = dict(max_new_tokens=96, temperature=0.9, top_p=0.95, repetition_penalty=1.1, batch_size=16)
SELF_INSTRUCT_STOPS = ("\n\n",)

# Test keys start at 1 (like IFEval's small ints), dev and train keys far above, so keys are unique across
# the files and each pool's keys do not move when another pool's size changes.
TEST_KEY_BASE = 1
DEV_KEY_BASE = 500_001
TRAIN_KEY_BASE = 1_000_001


def validate_records(records: list[Instruction], pool: str) -> None:
    """Every composed kwargs must be scorable; a failure points back at constraints.yaml."""
    for rec in records:
        try:
            checkers.validate_instruction(rec.instruction_id_list, rec.kwargs)
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
                raise UserError(f"make_instructions.self_instruct_count={count} needs the base model: {err}") from None
        model, tokenizer = loaded
        calls += 1  # a new seed per round, so a prompt drawn again is continued differently
        settings = GenerationSettings(seed=seed * 1000 + calls, **SELF_INSTRUCT_SETTINGS)
        samples = generate(model, tokenizer, prompts, settings, stop_strings=SELF_INSTRUCT_STOPS,
                           desc=f"self-instruct round {calls}")
        return [s[0].text for s in samples]

    return generate_fn


@stage_main
def main() -> None:
    remove_outputs(*OUTPUTS)
    all_params = load_params()
    params = all_params.make_instructions
    tasks = read_tasks(TASKS)
    config = read_constraints(CONSTRAINTS)

    tasks, dropped = dedupe_tasks(tasks, params.near_duplicate_threshold)
    train_pool, held_out = split_tasks(tasks, params.seed, params.eval_task_fraction)
    test_pool, dev_pool = split_tasks(held_out, params.seed, params.dev_task_fraction)
    proposed: list[Task] = []
    if params.self_instruct_count > 0:
        # Model-proposed tasks join the train pool only (never dev or test), after a near-duplicate filter
        # against every curated task (held-out pools included) and against each other.
        generate_fn = model_generate_fn(all_params.model, params.seed, params.self_instruct_count)
        proposed = self_instruct.generate_candidate_tasks(
            params, params.self_instruct_count, existing=tasks, generate_fn=generate_fn)
        train_pool += proposed

    def compose_pool(pool: list[Task], n: int, name: str, key_base: int) -> list[Instruction]:
        records = compose_instructions(pool, config, n, f"{name}:{params.seed}", params.max_constraints, key_base)
        validate_records(records, name)
        return records

    train = compose_pool(train_pool, params.n_train, "train", TRAIN_KEY_BASE)
    dev = compose_pool(dev_pool, params.n_dev, "dev", DEV_KEY_BASE)
    test = compose_pool(test_pool, params.n_test, "test", TEST_KEY_BASE)
    texts = {t.task_id: t.text for t in train_pool + held_out}
    for (a_name, a), (b_name, b) in (("train", train), ("dev", dev)), (("train", train), ("test", test)), \
                                    (("dev", dev), ("test", test)):
        try:
            check_disjoint(a, b, params.near_duplicate_threshold, task_texts=texts)
        except UserError as err:
            raise UserError(f"{a_name} vs {b_name}: {err}") from None

    try:
        for path, records in zip(OUTPUTS, (train, dev, test)):
            write_jsonl_atomic(path, dump(records))
    except BaseException:
        remove_outputs(*OUTPUTS)  # all three files or none
        raise

    print(f"tasks: {len(tasks)} kept, {len(dropped)} near-duplicates dropped; pools train {len(train_pool)} / "
          f"dev {len(dev_pool)} / test {len(test_pool)}")
    if params.self_instruct_count > 0:
        print(f"self-instruct: {len(proposed)} of {params.self_instruct_count} requested tasks proposed by the model "
              "and kept after filtering")
    for task, twin in dropped:
        print(f"  dropped {task.task_id} (near-duplicate of {twin.task_id})")
    for path, records in zip(OUTPUTS, (train, dev, test)):
        print(summary(f"{path.stem} -> {path}", records))


if __name__ == "__main__":
    main()
