"""The hand-written test suite (data/suites/handwritten.jsonl): IFEval-format prompts whose wording owes nothing
to data/constraints.yaml, so a model that learned only our templates does no better on it than the base.

These tests hold what a user of the suite relies on: it loads as Instruction records, every constraint can be
scored and satisfied, and neither its requests nor its constraint wording leak from the curated tasks or the
templates the training data is built from."""
import random
import string
from collections import Counter
from pathlib import Path

import pytest

from stages.lib import checkers, compose, constraint_draw, constraint_schema, near_duplicates
from stages.lib.params import MakeInstructionsParams
from stages.lib.paths import suite_path
from stages.lib.records import Instruction, Task, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / suite_path("handwritten")
NGRAM = 6  # a shared run of six words means a template was copied, not merely that both say "your answer"
THRESHOLD = MakeInstructionsParams().near_duplicate_threshold


@pytest.fixture(scope="module")
def suite() -> list[Instruction]:
    return read_jsonl(SUITE, Instruction)


def _ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = near_duplicates.normalise(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _template_ngrams(config: constraint_schema.ConstraintConfig) -> set[tuple[str, ...]]:
    """Word n-grams of every phrasing's fixed text. N-grams never span a {placeholder}, because the value
    put there differs from prompt to prompt; the words around it are what a template always contributes."""
    grams: set[tuple[str, ...]] = set()
    for spec in config.instructions.values():
        for phrasing in spec.phrasings:
            for literal, _, _, _ in string.Formatter().parse(phrasing):
                grams |= _ngrams(literal)
    return grams


def _pieces(prompt: str) -> list[str]:
    """The prompt and each of its sentences: a copied task can hide inside a longer prompt as one sentence."""
    return [prompt] + checkers.sentences(prompt)


# --- format -------------------------------------------------------------------------------------------------


def test_suite_is_ifeval_format_with_unique_keys_and_enough_prompts(suite, tasks):
    assert len(suite) >= 150
    keys = [r.key for r in suite]
    assert all(isinstance(k, int) for k in keys)
    assert len(set(keys)) == len(keys)
    assert len({r.task_id for r in suite}) == len(suite)
    assert len({near_duplicates.normalise(r.prompt) for r in suite}) == len(suite)
    categories = Counter(r.category for r in suite)
    assert set(categories) == {t.category for t in tasks}
    assert min(categories.values()) >= 20


def test_every_prompt_has_one_to_three_scorable_constraints(suite):
    for rec in suite:
        assert 1 <= len(rec.instruction_id_list) <= 3, rec.key
        assert len(set(rec.instruction_id_list)) == len(rec.instruction_id_list), rec.key
        for iid, kw in zip(rec.instruction_id_list, rec.kwargs):
            checkers.validate_kwargs(iid, kw)  # raises, naming the id and kwarg, if unscorable


def test_suite_spreads_over_many_instruction_ids(suite):
    counts = Counter(i for r in suite for i in r.instruction_id_list)
    assert len(counts) >= 20
    # no single constraint dominates the score, as in IFEval (its most frequent id is on 12% of prompts)
    assert max(counts.values()) <= 0.2 * len(suite)


# --- satisfiable --------------------------------------------------------------------------------------------


def test_constraint_sets_are_satisfiable(suite, config):
    conflicts = config.conflict_set()
    for rec in suite:
        ids, kwargs = rec.instruction_id_list, rec.kwargs
        assert constraint_draw.compatible(ids, conflicts), (rec.key, ids)
        # The prompt necessarily names its forbidden words, so those are taken out before asking whether
        # the request (or any text another constraint requires) forces them into the answer.
        forbidden = {w.lower() for iid, kw in zip(ids, kwargs) if iid == "keywords:forbidden_words" for w in kw["forbidden_words"]}
        request = " ".join(w for w in rec.prompt.split() if near_duplicates.normalise(w) not in forbidden)
        task = Task(task_id=rec.task_id, category=rec.category, text=request)
        assert constraint_draw.kwargs_consistent(task, ids, kwargs), (rec.key, rec.prompt)


def test_repeated_request_is_in_the_prompt_verbatim(suite):
    repeats = [(r, kw) for r in suite for iid, kw in zip(r.instruction_id_list, r.kwargs) if iid == "combination:repeat_prompt"]
    assert repeats
    for rec, kw in repeats:
        assert kw["prompt_to_repeat"] in rec.prompt, rec.key


def test_a_response_meeting_the_words_of_the_prompt_passes_its_checkers(suite):
    """A spot check that kwargs say what the prompt asks: hand-written answers to a few prompts pass."""
    by_key = {r.key: r for r in suite}
    answers = {
        1: "Saturn has the most known moons of any planet in our solar system.",
        29: "The Ural Mountains are usually taken as the border.\n\n***\n\nThey run from the Arctic Ocean to Kazakhstan.",
        47: "The appendix may store helpful gut bacteria. Ask your doctor for more.",
    }
    for key, answer in answers.items():
        rec = by_key[key]
        assert checkers.score(answer, rec.instruction_id_list, rec.kwargs, rec.prompt).prompt_strict, rec.prompt


# --- no leakage from curated tasks or templates ---------------------------------------------------------------


def test_suite_shares_no_near_duplicate_text_with_curated_tasks(suite, tasks):
    texts = [t.text for t in tasks]
    pieces = [(rec.key, p) for rec in suite for p in _pieces(rec.prompt)]
    pairs = near_duplicates.near_duplicate_pairs([p for _, p in pieces], texts, THRESHOLD)
    assert not pairs, [(pieces[i][0], pieces[i][1], texts[j], round(r, 2)) for i, j, r in pairs[:5]]
    normalised = [near_duplicates.normalise(t) for t in texts]
    for rec in suite:
        prompt = f" {near_duplicates.normalise(rec.prompt)} "
        assert not any(f" {t} " in prompt for t in normalised), rec.key


def test_suite_prompts_contain_no_template_wording(suite, config):
    templates = _template_ngrams(config)
    for rec in suite:
        shared = _ngrams(rec.prompt) & templates
        assert not shared, (rec.key, sorted(" ".join(g) for g in shared))


# --- the guards above can fail --------------------------------------------------------------------------------


def test_template_guard_flags_a_prompt_rendered_from_constraints_yaml(config, tasks):
    templates = _template_ngrams(config)
    rng = random.Random(0)
    task = next(t for t in tasks if t.category == "lists")
    flagged = 0
    for iid, spec in config.instructions.items():
        for phrasing in spec.phrasings:
            literal_words = max(len(near_duplicates.normalise(lit).split())
                                for lit, *_ in string.Formatter().parse(phrasing))
            if literal_words < NGRAM:
                continue
            prompt = compose.render_prompt(task.text, [phrasing], [constraint_draw.draw_kwargs(spec, task, rng)])
            assert _ngrams(prompt) & templates, (iid, prompt)
            flagged += 1
    assert flagged >= 30


def test_near_duplicate_guard_flags_a_task_hidden_in_a_longer_prompt(tasks):
    task = tasks[0].text
    prompt = f"Quick question. {task.rstrip('?.')}, please? Answer in under twenty words."
    assert near_duplicates.near_duplicate_pairs(_pieces(prompt), [task], THRESHOLD)


def test_kwargs_for_a_contradictory_set_are_rejected():
    # what the satisfiability test relies on: a required phrase with a comma under no_comma is caught
    task = Task(task_id="t", category="c", text="Say goodbye.")
    ids = ["punctuation:no_comma", "startend:end_checker"]
    assert not constraint_draw.kwargs_consistent(task, ids, [{}, {"end_phrase": "Bye, then."}])
    assert constraint_draw.kwargs_consistent(task, ids, [{}, {"end_phrase": "Bye then."}])
