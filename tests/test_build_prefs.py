"""Preference pairs: chosen passes every constraint, rejected scores lower; SFT's exact format, weighted
synthetic negatives led by minimal edits, repeatable."""
import random
from collections import Counter

import pytest
from conftest import run_stage

from stages.lib import checkers, negatives
from stages.lib.paths import BASE_MODEL, PREFS_DIR, PREF_PAIRS, SFT_ADAPTER, SFT_DATA, SFT_DATA_DIR, metrics_path
from stages.lib.preference import score_response
from stages.lib.prompts import zero_shot_prompt
from stages.lib.records import PreferencePair, SftExample, read_jsonl

INSTRUCTION = "List two fruits. Do not use any commas in your response. Answer in lowercase letters only."
IDS = ["punctuation:no_comma", "change_case:english_lowercase"]
KWARGS = [{}, {}]
GOOD = "apples and pears are two common fruits."


@pytest.mark.slow
def test_pairs_have_checked_margins_and_sft_format(tiny_pipeline):
    pairs = read_jsonl(tiny_pipeline / PREF_PAIRS, PreferencePair)
    sft = {r.key: r for r in read_jsonl(tiny_pipeline / SFT_DATA, SftExample)}
    assert pairs
    for p in pairs:
        record = sft[p.key]
        assert p.margin == pytest.approx(p.chosen_score - p.rejected_score, abs=1e-3)
        assert p.margin > 0
        assert p.chosen != p.rejected
        assert p.prompt == record.prompt  # the very string SFT trained on
        assert "\\n" not in p.prompt + p.chosen + p.rejected  # real newlines, never a literal backslash-n
        assert p.chosen.startswith(" ") and p.rejected.startswith(" ")
        # chosen passes every constraint of the prompt; rejected fails one or fails a quality gate
        assert checkers.score(p.chosen.strip(), record.instruction_id_list, record.kwargs).prompt_strict
        rejected = score_response(p.rejected.strip(), record.instruction, record.instruction_id_list, record.kwargs, "###")
        assert rejected.strict_fraction < 1.0 or rejected.failed_gates


@pytest.mark.slow
def test_minimal_edit_pairs_differ_on_exactly_one_constraint(tiny_pipeline):
    sft = {r.key: r for r in read_jsonl(tiny_pipeline / SFT_DATA, SftExample)}
    edits = [p for p in read_jsonl(tiny_pipeline / PREF_PAIRS, PreferencePair)
             if p.rejected_type == "minimal_edit"]
    assert edits
    for p in edits:
        record = sft[p.key]
        after = checkers.score(p.rejected.strip(), record.instruction_id_list, record.kwargs).strict
        assert sum(not ok for ok in after) == 1


@pytest.mark.slow
def test_same_seed_gives_identical_pairs(tiny_pipeline, tmp_path):
    import shutil

    for rel in (BASE_MODEL, SFT_ADAPTER, SFT_DATA_DIR):
        shutil.copytree(tiny_pipeline / rel, tmp_path / rel)
    shutil.copy(tiny_pipeline / "params.yaml", tmp_path / "params.yaml")
    result = run_stage("build_prefs", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / PREF_PAIRS).read_bytes() == (tiny_pipeline / PREF_PAIRS).read_bytes()


@pytest.mark.slow
def test_missing_adapter_is_a_clear_error_with_no_output(tiny_pipeline, tmp_path):
    import shutil

    for rel in (BASE_MODEL, SFT_DATA_DIR):
        shutil.copytree(tiny_pipeline / rel, tmp_path / rel)
    shutil.copy(tiny_pipeline / "params.yaml", tmp_path / "params.yaml")
    result = run_stage("build_prefs", tmp_path)
    assert result.returncode == 2 and str(SFT_ADAPTER) in result.stderr
    assert not (tmp_path / PREFS_DIR).exists() and not (tmp_path / metrics_path("build_prefs")).exists()


def test_type_weights_hold_on_a_large_draw():
    weights = {"refusal": 1.0, "minimal_edit": 2.0, "off_topic": 1.0, "verbose": 0.0, "truncated": 4.0}
    n = 40_000
    counts = Counter(negatives.draw_types(weights, n, random.Random(0)))
    total = sum(weights.values())
    for kind, w in weights.items():
        expected = n * w / total
        sd = (n * (w / total) * (1 - w / total)) ** 0.5
        assert abs(counts.get(kind, 0) - expected) <= 4 * sd + (0 if w else 0), (kind, counts)
    assert counts.get("verbose", 0) == 0


def test_format_violation_breaks_exactly_one_constraint():
    assert checkers.score(GOOD, IDS, KWARGS).strict == (True, True)
    for seed in range(20):
        broken, broken_id = negatives.format_violation(GOOD, IDS, KWARGS, random.Random(seed))
        after = checkers.score(broken, IDS, KWARGS).strict
        assert sum(not ok for ok in after) == 1
        assert not after[IDS.index(broken_id)]


@pytest.mark.parametrize("kind", ["refusal", "off_topic", "verbose", "truncated", "minimal_edit"])
def test_every_negative_type_scores_below_a_sound_response(kind):
    from stages.build_prefs import synthetic_negative
    from stages.lib.records import Instruction

    instr = Instruction(key=1, prompt=INSTRUCTION, instruction_id_list=IDS, kwargs=KWARGS, category="lists")
    pool = ["the moon orbits the earth every month or so.", "paris is the capital city of france."]
    long_good = GOOD + " both grow on trees and taste sweet when they are ripe in late summer."
    text = synthetic_negative(kind, instr, long_good, pool, random.Random(1))
    chosen = score_response(long_good, INSTRUCTION, IDS, KWARGS, "###")
    rejected = score_response(text, INSTRUCTION, IDS, KWARGS, "###")
    assert chosen.failed_gates == ()
    assert chosen.score - rejected.score >= 0.25, (kind, text, rejected)


def test_record_schema_rejects_identical_chosen_and_rejected():
    with pytest.raises(ValueError):
        PreferencePair(prompt=zero_shot_prompt("x"), chosen=" a", rejected=" a", chosen_score=1, rejected_score=0,
                       margin=1, rejected_type="policy", chosen_source="policy", key=1, category="c")
