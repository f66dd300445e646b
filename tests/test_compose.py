"""Making instructions: constraint_schema.py, near_duplicates.py, task_split.py, constraint_draw.py, compose.py
(split, constraints, dedupe, leakage check) and self_instruct.py (list prompts and parsing)."""
import itertools
import random

import pytest
import yaml

from stages.lib import (
    checkers, compose, constraint_draw, constraint_schema, near_duplicates, self_instruct, task_split,
)
from stages.lib.errors import UserError
from stages.lib.params import MakeInstructionsParams
from stages.lib.records import Instruction, Task, dump



def _instr(key, task_id, prompt) -> Instruction:
    return Instruction(key=key, prompt=prompt, instruction_id_list=[], kwargs=[], category="x", task_id=task_id)


# --- text similarity and dedupe ---------------------------------------------------------------------


def test_normalise_lowercases_strips_punctuation_and_collapses_space():
    assert near_duplicates.normalise("  Hello,   World!\n\"Quote\"  ") == "hello world quote"


def test_similarity_flags_one_word_change_but_not_unrelated_tasks():
    canada = "What is the capital city of Canada?"
    assert near_duplicates.similarity(canada, "What is the capital city of Peru?") >= 0.85
    assert near_duplicates.similarity(canada, "Write a haiku about the ocean.") < 0.3


def test_dedupe_tasks_drops_near_duplicates_and_reports_the_twin():
    a = Task(task_id="a", category="c", text="Name three animals that live in the desert.")
    b = Task(task_id="b", category="c", text="Name three animals that live in the desert!")
    c = Task(task_id="c", category="c", text="Explain how a kettle boils water.")
    kept, dropped = near_duplicates.dedupe_tasks([a, b, c], 0.85)
    assert [t.task_id for t in kept] == ["a", "c"]
    assert [(d.task_id, twin.task_id) for d, twin in dropped] == [("b", "a")]


def test_dedupe_instructions_removes_repeated_prompts():
    recs = [_instr(1, "t1", "Say hi. No commas."), _instr(2, "t1", "say hi no commas"), _instr(3, "t2", "Say bye.")]
    assert [r.key for r in near_duplicates.dedupe_instructions(recs)] == [1, 3]


def test_curated_tasks_contain_no_near_duplicates(tasks):
    _, dropped = near_duplicates.dedupe_tasks(tasks, MakeInstructionsParams().near_duplicate_threshold)
    assert dropped == []


# --- split ------------------------------------------------------------------------------------------


def test_split_is_disjoint_stratified_and_seeded(tasks):
    train, evals = task_split.split_tasks(tasks, seed=0, eval_fraction=0.3)
    assert {t.task_id for t in train}.isdisjoint({t.task_id for t in evals})
    assert len(train) + len(evals) == len(tasks)
    assert {t.category for t in evals} == {t.category for t in tasks}
    for cat in {t.category for t in tasks}:
        n = sum(t.category == cat for t in tasks)
        assert sum(t.category == cat for t in evals) == round(n * 0.3)
    again = task_split.split_tasks(tasks, seed=0, eval_fraction=0.3)
    assert [t.task_id for t in again[1]] == [t.task_id for t in evals]
    other = task_split.split_tasks(tasks, seed=1, eval_fraction=0.3)
    assert [t.task_id for t in other[1]] != [t.task_id for t in evals]


# --- composing ---------------------------------------------------------------------------------------


def test_composition_is_deterministic_by_seed(tasks, config):
    make = lambda seed: dump(compose.compose_instructions(tasks, config, 80, seed, 3))  # noqa: E731
    assert make(7) == make(7)
    assert make(7) != make(8)


def test_composed_records_are_valid_consistent_and_conflict_free(tasks, config):
    records = compose.compose_instructions(tasks, config, 600, "stress", 4)
    conflicts = config.conflict_set()
    by_id = {t.task_id: t for t in tasks}
    assert len({r.key for r in records}) == len(records)
    assert len(near_duplicates.dedupe_instructions(records)) == len(records)
    for rec in records:
        ids = rec.instruction_id_list
        assert 1 <= len(ids) <= 4 and len(set(ids)) == len(ids)
        for a, b in itertools.combinations(ids, 2):
            assert frozenset((a, b)) not in conflicts, (rec.key, a, b)
        for iid, kw in zip(ids, rec.kwargs):
            checkers.validate_kwargs(iid, kw)
        task = by_id[rec.task_id]
        assert rec.prompt.startswith(task.text) and rec.category == task.category
        assert constraint_draw.kwargs_consistent(task, ids, rec.kwargs)
        for iid, kw in zip(ids, rec.kwargs):
            assert constraint_draw.applies_to(config.instructions[iid], task)
            if iid == "combination:repeat_prompt":
                assert kw["prompt_to_repeat"] == task.text
                assert ids[0] == iid  # phrased right after the task, so "the request above" is the task


def test_every_configured_id_gets_drawn(tasks, config):
    records = compose.compose_instructions(tasks, config, 600, 0, 2)
    drawn = {iid for r in records for iid in r.instruction_id_list}
    assert drawn == set(config.instructions)


def test_constrained_response_only_on_yes_no_questions(tasks, config):
    spec = config.instructions["detectable_format:constrained_response"]
    yes_no = [t for t in tasks if constraint_draw.applies_to(spec, t)]
    assert len(yes_no) >= 10
    assert all(" or " not in t.text for t in yes_no)


def test_small_pool_is_reused_with_new_constraints_never_beyond_it(config):
    pool = [
        Task(task_id=f"p{i}", category="lists", text=text)
        for i, text in enumerate(["List three kinds of trees.", "Name four rivers in Europe.", "List two warm drinks."])
    ]
    records = compose.compose_instructions(pool, config, 12, 0, 2)
    assert len(records) == 12
    assert {r.task_id for r in records} == {"p0", "p1", "p2"}
    assert len({(r.task_id, tuple(r.instruction_id_list), str(r.kwargs)) for r in records}) == 12
    assert [r.key for r in records] == list(range(1, 13))


def test_kwargs_consistency_rules():
    task = Task(task_id="t", category="c", text="Rewrite this without the word very: it was very cold.")
    consistent = constraint_draw.kwargs_consistent
    assert not consistent(task, ["keywords:forbidden_words"], [{"forbidden_words": ["very", "nice"]}])
    ids = ["startend:end_checker", "punctuation:no_comma"]
    assert not constraint_draw.kwargs_consistent(task, ids, [{"end_phrase": "Thanks, bye."}, {}])
    ids = ["length_constraints:number_sentences", "length_constraints:number_paragraphs"]
    assert not consistent(task, ids, [{"relation": "less than", "num_sentences": 3}, {"num_paragraphs": 3}])
    assert consistent(task, ids, [{"relation": "less than", "num_sentences": 4}, {"num_paragraphs": 3}])


def test_render_prompt_formats_lists():
    text = compose.render_prompt(
        "Describe a pond.",
        ["Use {keywords}.", "Avoid {forbidden_words:or}.", "Use at least {n} words."],
        [{"keywords": ["frog", "reed"]}, {"forbidden_words": ["very"]}, {"n": 20}],
    )
    assert text == 'Describe a pond. Use "frog" and "reed". Avoid "very". Use at least 20 words.'


# --- constraints.yaml validation ------------------------------------------------------------------


def test_unknown_instruction_id_is_named():
    raw = {"instructions": {"punctuation:no_semicolon": {"phrasings": ["No semicolons."]}}}
    with pytest.raises(UserError, match=r"my\.yaml.*'punctuation:no_semicolon'"):
        constraint_schema.parse_constraints(raw, checkers.SUPPORTED_IDS, source="my.yaml")


def test_unknown_id_in_conflicts_is_named():
    raw = {
        "instructions": {"punctuation:no_comma": {"phrasings": ["No commas."]}},
        "conflicts": [["punctuation:no_comma", "startend:nonsense"]],
    }
    with pytest.raises(UserError, match=r"conflicts\[0\].*'startend:nonsense'"):
        constraint_schema.parse_constraints(raw, checkers.SUPPORTED_IDS)


def test_placeholder_without_kwarg_is_an_error():
    raw = {"instructions": {"length_constraints:number_words": {"phrasings": ["Use {num_words} words."]}}}
    with pytest.raises(UserError, match="num_words"):
        constraint_schema.parse_constraints(raw, checkers.SUPPORTED_IDS)


def test_kwarg_spec_needs_exactly_one_way():
    raw = {
        "instructions": {
            "detectable_format:title": {"phrasings": ["Title."], "kwargs": {"x": {"choices": [1], "range": [1, 2]}}}
        }
    }
    with pytest.raises(UserError, match="exactly one"):
        constraint_schema.parse_constraints(raw, checkers.SUPPORTED_IDS)


# --- check_disjoint -----------------------------------------------------------------------------------


def test_check_disjoint_rejects_a_shared_task_id():
    with pytest.raises(UserError, match="qa-001"):
        near_duplicates.check_disjoint([_instr(1, "qa-001", "A? x")], [_instr(2, "qa-001", "A? y")], 0.85)


def test_check_disjoint_names_a_planted_near_duplicate(tasks, config):
    train_pool, eval_pool = task_split.split_tasks(tasks, 0, 0.3)
    victim = train_pool[5]
    twin = Task(task_id="planted-001", category=victim.category, text=victim.text.replace(" the ", " a ", 1) + " ")
    eval_pool = eval_pool + [twin]
    train = compose.compose_instructions(train_pool, config, len(train_pool), 0, 2)
    evals = compose.compose_instructions(eval_pool, config, len(eval_pool), 0, 2)
    texts = {t.task_id: t.text for t in train_pool + eval_pool}
    with pytest.raises(UserError, match=rf"task {victim.task_id} vs eval task planted-001"):
        near_duplicates.check_disjoint(train, evals, 0.85, task_texts=texts)
    # without the plant the real split is clean
    clean = [r for r in evals if r.task_id != "planted-001"]
    near_duplicates.check_disjoint(train, clean, 0.85, task_texts=texts)


def test_check_disjoint_compares_whole_prompts_without_task_texts():
    train = [_instr(1, None, "Describe the smell of rain on a hot road.")]
    evals = [_instr(9, None, "Describe the smell of rain on a hot road!")]
    with pytest.raises(UserError, match="key 1 vs eval key 9"):
        near_duplicates.check_disjoint(train, evals, 0.85)


# --- self-instruct ------------------------------------------------------------------------------------


def test_list_prompt_ends_with_the_next_number():
    prompt = self_instruct.build_list_prompt(["Name a fruit that is red.", "Explain  how rain forms."])
    assert prompt.endswith("\n1. Name a fruit that is red.\n2. Explain how rain forms.\n3.")


def test_parse_numbered_list_keeps_first_item_and_drops_meta_text():
    generated = (
        " Write a short poem about a sleepy fox.\n"
        "10. Here are some more tasks for you to try.\n"
        "11. Sure!\n"
        "12. What is the next item in this list?\n"
        "13. Instruction: list three colours\n"
        "14. Explain why bread goes stale.\n"
        "15. Explain why bread goes stale!\n"
        "16. Go.\n"
        "That was a fun list.\n"
        "17. List three things found in a desk drawer.\n"
    )
    assert self_instruct.parse_numbered_list(generated, 9) == [
        "Write a short poem about a sleepy fox.",
        "Explain why bread goes stale.",
    ]


def test_parse_numbered_list_stops_when_numbering_breaks():
    generated = " Name two kinds of cheese.\n\n10. Describe a windy beach.\n1. Start of another list here.\n"
    assert self_instruct.parse_numbered_list(generated, 9) == ["Name two kinds of cheese.", "Describe a windy beach."]


def test_propose_tasks_filters_existing_and_repeated_items(tasks):
    generated = [
        f" {tasks[0].text}\n10. Describe a rainy harbour at dawn with fishing boats.\n"
        "11. Describe the rainy harbour at dawn with fishing boats.",
        " Name three foods made from corn.",
    ]
    new = self_instruct.propose_tasks(generated, tasks, category="creative_writing", first_number=9, threshold=0.85)
    assert [(t.task_id, t.text) for t in new] == [
        ("si-001", "Describe a rainy harbour at dawn with fishing boats."),
        ("si-002", "Name three foods made from corn."),
    ]
    assert {t.category for t in new} == {"creative_writing"}


def test_generate_candidate_tasks_needs_a_model_and_uses_an_injected_one(tasks):
    params = MakeInstructionsParams(self_instruct_count=3)
    with pytest.raises(UserError, match="no model was given"):
        self_instruct.generate_candidate_tasks(params, 3, existing=tasks)
    ideas = ["Describe a market stall that sells old maps.", "Explain why kites need wind to fly.",
             "List four things that make a picnic fun.", "Write a short poem about a lazy river.",
             "Name three games children play in the snow."]
    replies = iter(f" {idea}\n" for idea in ideas * 20)
    fake = lambda prompts: [next(replies) for _ in prompts]  # noqa: E731
    new = self_instruct.generate_candidate_tasks(params, 3, existing=tasks, generate_fn=fake)
    assert len(new) == 3 and len({t.task_id for t in new}) == 3
    assert all(t.category in {x.category for x in tasks} for t in new)


def test_fake_generation_prompts_are_per_category(tasks):
    prompts = self_instruct.build_prompts(tasks, random.Random(0), n_shots=8)
    assert [c for c, _, _ in prompts] == sorted({t.category for t in tasks})
    assert all(p.endswith("\n9.") and first == 9 for _, p, first in prompts)
