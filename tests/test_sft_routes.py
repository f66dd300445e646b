"""generate_sft's routes to verified data: adaptive best-of-k, critique and revise, back-translation.

The samplers here are scripted (a response per prompt and seed), because what is tested is the routing: what
becomes a record and from which route. Every response is checked by the real checkers."""
from __future__ import annotations

import random
from pathlib import Path

from stages.lib import checkers
from stages.lib.backtranslate import backtranslate, end_phrase_of, satisfied
from stages.lib.curated import read_constraints
from stages.lib.findings import finding, findings
from stages.lib.generation import Sample
from stages.lib.paths import CONSTRAINTS
from stages.lib.prompts import REVISED, RevisionShot, revision_prompt
from stages.lib.records import Instruction, Task
from stages.lib.revision import pick_revision_shots
from stages.lib.sft_routes import backtranslate_failures, best, passing_by_samples, revise_failures, sample_until_pass

ROOT = Path(__file__).resolve().parents[1]
TASK = Task(task_id="ex-900", category="explanation", text="Explain why the sky looks blue on a clear day.")
LOWER_NO_COMMA = Instruction(
    key=1, prompt=TASK.text + " Answer in lowercase only. Do not use any commas.", task_id=TASK.task_id,
    task=TASK.text, category=TASK.category, instruction_id_list=["change_case:english_lowercase", "punctuation:no_comma"],
    kwargs=[{}, {}])
FAILING = "Sunlight is scattered by air, and blue light scatters the most."  # capitals and a comma
PASSING = "sunlight is scattered by the air and blue light scatters the most."


def scripted(responses: dict[str, list[str]]):
    """A sampler whose i-th call returns, for every prompt, the i-th entry of responses[kind] (kind = "sample"
    or "revise", read off the prompt's last line), repeated for every requested sample."""
    calls: list[tuple[list[str], int, int]] = []

    def sampler(prompts: list[str], seed: int, n: int) -> list[list[Sample]]:
        calls.append((prompts, seed, n))
        out = []
        for prompt in prompts:
            kind = "revise" if prompt.endswith(REVISED) else "sample"
            script = responses[kind]
            done = sum(1 for ps, _, _ in calls[:-1] if any(p.endswith(REVISED) == (kind == "revise") for p in ps))
            out.append([Sample(" " + script[min(done, len(script) - 1)], 12, False)] * n)
        return out

    sampler.calls = calls
    return sampler


# --- adaptive best-of-k --------------------------------------------------------------------------------


def test_sampling_stops_at_the_first_passing_round_and_never_passes_a_failure():
    sampler = scripted({"sample": [FAILING, FAILING, PASSING]})
    attempts = sample_until_pass(sampler, [LOWER_NO_COMMA], ["p"], samples_per_prompt=2, max_samples_per_prompt=8,
                                 seed=0, delimiter="###")[0]
    assert len(sampler.calls) == 3 and len(attempts) == 6  # rounds 1-2 failed, round 3 passed, then it stopped
    assert [a.passes for a in attempts] == [False] * 4 + [True] * 2
    assert len({seed for _, seed, _ in sampler.calls}) == 3  # each round draws with its own seed
    assert best(attempts).cleaned.text == PASSING
    assert passing_by_samples([attempts], 2, 8) == {"2": 0.0, "4": 0.0, "6": 1.0, "8": 1.0}


def test_sampling_gives_up_at_max_samples_per_prompt():
    sampler = scripted({"sample": [FAILING]})
    attempts = sample_until_pass(sampler, [LOWER_NO_COMMA], ["p"], samples_per_prompt=3, max_samples_per_prompt=7,
                                 seed=0, delimiter="###")[0]
    assert [n for _, _, n in sampler.calls] == [3, 3, 1] and len(attempts) == 7
    assert not any(a.passes for a in attempts)
    assert best(attempts).score.strict_fraction < 1.0  # the closest miss, still a miss


def test_a_truncated_or_refusing_response_never_passes():
    truncated = [Sample(" " + PASSING, 12, True)]
    refusal = [Sample(" i'm sorry but i can't help with that request.", 12, False)]
    for samples in (truncated, refusal):
        attempts = sample_until_pass(lambda ps, s, n: [samples for _ in ps], [LOWER_NO_COMMA], ["p"], 1, 1, 0, "###")
        assert checkers.score(attempts[0][0].cleaned.text, LOWER_NO_COMMA.instruction_id_list, LOWER_NO_COMMA.kwargs)
        assert not attempts[0][0].passes


# --- critique and revise -------------------------------------------------------------------------------


def test_a_revision_is_kept_only_when_it_passes_the_checkers():
    drafts = [best(sample_until_pass(scripted({"sample": [FAILING]}), [LOWER_NO_COMMA], ["p"], 1, 1, 0, "###")[0])]
    shots = [RevisionShot("Name a colour. Answer in lowercase.", "Red.", ("Capitals.",), "red.",
                          ("change_case:english_lowercase",))]
    still_failing = scripted({"revise": ["Sunlight, scattered."]})
    revised = revise_failures(still_failing, [LOWER_NO_COMMA], drafts, shots, 1, 2, 2, 0, "###")[0]
    assert revised and not any(a.passes for a in revised)  # re-checked, so never counted as passing
    fixed = scripted({"revise": [PASSING]})
    revised = revise_failures(fixed, [LOWER_NO_COMMA], drafts, shots, 1, 2, 2, 0, "###")[0]
    assert best(revised).passes and best(revised).cleaned.text == PASSING
    assert len(fixed.calls) == 1  # a passing revision ends the revising
    prompt = fixed.calls[0][0][0]
    assert FAILING in prompt and "lowercase" in prompt and "comma" in prompt  # draft and findings shown


def test_findings_name_what_failed_and_what_is_required():
    assert findings(FAILING, LOWER_NO_COMMA.instruction_id_list, LOWER_NO_COMMA.kwargs) == [
        finding("change_case:english_lowercase", {}, FAILING), finding("punctuation:no_comma", {}, FAILING)]
    words = finding("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "one two three four five six")
    assert words == "The response has 6 words. It must have less than 5 words."
    assert '"very", "nice"' in finding("keywords:forbidden_words", {"forbidden_words": ["very", "nice"]}, "very nice")
    for iid in checkers.SUPPORTED_IDS:  # every id has its own words, never the generic fallback
        assert iid in __import__("stages.lib.findings", fromlist=["REQUIRED"]).REQUIRED
    assert "Any other questions?" in finding("startend:end_checker", {"end_phrase": "Any other questions?"}, "Hi.")
    assert findings(PASSING, LOWER_NO_COMMA.instruction_id_list, LOWER_NO_COMMA.kwargs) == []


def test_revision_prompt_shows_the_worked_examples_that_fix_the_failing_ids():
    pool = [RevisionShot(f"Task {i}.", "draft", (f"problem {i}",), "fixed", (iid,))
            for i, iid in enumerate(["punctuation:no_comma", "startend:quotation", "detectable_format:title"])]
    chosen = pick_revision_shots(pool, 2, "x", ["detectable_format:title"], random.Random(0))
    assert chosen[-1].instruction_ids == ("detectable_format:title",)  # the best match sits next to the query
    prompt = revision_prompt("Do x.", "bad draft", ["it fails"], chosen, "###")
    assert prompt.endswith("Instruction: Do x.\nDraft: bad draft\nProblems: it fails\nRevised response:")
    assert prompt.count("###") == 2


# --- back-translation -------------------------------------------------------------------------------------


CONFIG = read_constraints(ROOT / CONSTRAINTS)


def test_backtranslated_constraints_really_hold():
    response = "Sunlight is made of many colours. Air scatters the blue part the most so the sky looks blue."
    found = satisfied(TASK, response, CONFIG)
    assert "punctuation:no_comma" in found and "change_case:english_lowercase" not in found
    for iid, kwarg_sets in found.items():
        for kw in kwarg_sets:
            assert checkers.score(response, [iid], [kw]).prompt_strict, (iid, kw)
    for seed in range(30):
        made = backtranslate(TASK, response, CONFIG, random.Random(seed), max_constraints=2)
        assert made is not None
        prompt, ids, kwargs = made
        assert prompt.startswith(TASK.text) and 1 <= len(ids) <= 2
        assert checkers.score(response, ids, kwargs).prompt_strict


def test_end_phrase_is_the_responses_own_short_last_sentence():
    assert end_phrase_of("The sky is blue. That is all for today.") == "That is all for today."
    assert end_phrase_of("A long last sentence " + "word " * 20 + "ends here.") is None


def test_backtranslation_rewrites_the_instruction_and_keeps_the_response():
    attempts = sample_until_pass(scripted({"sample": [FAILING]}), [LOWER_NO_COMMA], ["p"], 1, 1, 0, "###")
    made = backtranslate_failures([LOWER_NO_COMMA], [best(attempts[0])], CONFIG, 2, 0)[0]
    assert made is not None and made.attempt.passes
    assert made.instruction.prompt != LOWER_NO_COMMA.prompt and made.instruction.prompt.startswith(TASK.text)
    assert made.attempt.cleaned.text == FAILING
    assert checkers.score(FAILING, made.instruction.instruction_id_list, made.instruction.kwargs).prompt_strict
    # an unfinished answer is never back-translated
    cut = sample_until_pass(lambda ps, s, n: [[Sample(" " + FAILING, 12, True)] for _ in ps], [LOWER_NO_COMMA],
                            ["p"], 1, 1, 0, "###")
    assert backtranslate_failures([LOWER_NO_COMMA], [best(cut[0])], CONFIG, 2, 0) == [None]
