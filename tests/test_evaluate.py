"""Evaluation: one clean model per run; unsupported ids and unusable kwargs excluded per prompt, counted and
named; IFEval's input format."""
import json
import shutil

import pytest
from conftest import run_stage

from stages.lib.paths import (
    BASE_MODEL, DPO_ADAPTER, MODELS, OUTCOMES_DIR, SFT_ADAPTER, START_ADAPTER, SUITES_DIR, eval_metrics_path,
    outcomes_path, stage_files, suite_path,
)
from stages.lib.records import EvalOutcome, read_jsonl


def _copy_project(src, dst, *rels):
    for rel in rels:
        (shutil.copytree if (src / rel).is_dir() else shutil.copy)(src / rel, dst / rel)


@pytest.mark.slow
def test_base_evaluated_after_an_adapter_in_the_same_process_is_the_base(tiny_pipeline, tmp_path, monkeypatch):
    from stages import evaluate

    (tmp_path / BASE_MODEL.parent).mkdir()
    (tmp_path / SUITES_DIR).mkdir(parents=True)
    _copy_project(tiny_pipeline, tmp_path, "params.yaml", BASE_MODEL, SFT_ADAPTER, suite_path("test"))
    monkeypatch.chdir(tmp_path)
    evaluate.main(["--model", "sft", "--suite", "test"])
    evaluate.main(["--model", "base", "--suite", "test"])
    here = read_jsonl(tmp_path / outcomes_path("base", "test"), EvalOutcome)
    alone = read_jsonl(tiny_pipeline / outcomes_path("base", "test"), EvalOutcome)  # its own process
    assert [o.response for o in here] == [o.response for o in alone]


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["test", "handwritten"])
def test_every_model_is_scored_on_the_same_prompts(tiny_pipeline, suite):
    keys = {m: [o.key for o in read_jsonl(tiny_pipeline / outcomes_path(m, suite), EvalOutcome)]
            for m in MODELS}
    assert keys["base"] == keys["sft"] == keys["dpo"]
    precisions = {json.dumps(json.loads((tiny_pipeline / eval_metrics_path(m, suite)).read_text())["precision"])
                  for m in MODELS}
    assert len(precisions) == 1


@pytest.mark.slow
def test_dpo_folder_holds_its_whole_adapter_stack(tiny_pipeline):
    """train_dpo.init=sft (the tiny pipeline's default): models/dpo keeps the SFT adapter it started from, byte for
    byte, so evaluate@dpo needs models/base and models/dpo only."""
    from stages.lib.adapters import adapter_stack

    start = tiny_pipeline / DPO_ADAPTER / START_ADAPTER
    assert (start / "adapter_model.safetensors").read_bytes() == \
        (tiny_pipeline / SFT_ADAPTER / "adapter_model.safetensors").read_bytes()
    import os
    cwd = os.getcwd()
    os.chdir(tiny_pipeline)
    try:
        assert adapter_stack("dpo") == [DPO_ADAPTER / START_ADAPTER, DPO_ADAPTER]
        assert adapter_stack("sft") == [SFT_ADAPTER] and adapter_stack("base") == []
    finally:
        os.chdir(cwd)


# A small file in IFEval's own input format (None-valued kwargs, no category): one prompt with an id we
# have no checker for and one whose kwargs no checker can take are set aside, each counted and named;
# the rest, including the language and "#"-counting prompts that used to stop a whole run, are scored.
IFEVAL_ROWS = [
    {"key": 1, "prompt": "Write a haiku about rain. Do not use commas.",
     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"language": None}]},
    {"key": 2, "prompt": "Answer in French: what is the capital of Italy?",
     "instruction_id_list": ["language:response_language"], "kwargs": [{"language": "fr"}]},
    {"key": 3, "prompt": "Include the sentence 'Rain is wet.' and answer in lowercase.",
     "instruction_id_list": ["keywords:key_sentences", "change_case:english_lowercase"],
     "kwargs": [{"key_sentences": ["Rain is wet."], "num_sentences": 1}, {}]},
    {"key": 4, "prompt": "Write a tweet with at least 2 hashtags.",
     "instruction_id_list": ["keywords:letter_frequency"],
     "kwargs": [{"letter": "#", "let_frequency": 2, "let_relation": "at least", "language": None}]},
    {"key": 5, "prompt": "Use the letters a and b at least twice.",
     "instruction_id_list": ["punctuation:no_comma", "keywords:letter_frequency"],
     "kwargs": [{}, {"letter": "ab", "let_frequency": 2, "let_relation": "at least"}]},
]


def test_split_supported_sets_aside_one_prompt_at_a_time():
    from stages.evaluate import split_supported
    from stages.lib.records import Instruction

    supported, unsupported, invalid = split_supported([Instruction.model_validate(r) for r in IFEVAL_ROWS])
    assert [p.key for p in supported] == [1, 2, 4]
    assert unsupported == {"keywords:key_sentences": 1}
    assert [i["key"] for i in invalid] == [5]
    assert "keywords:letter_frequency" in invalid[0]["reason"] and "'letter'" in invalid[0]["reason"]


def _suite_project(tiny_pipeline, tmp_path, rows_or_text) -> None:
    (tmp_path / BASE_MODEL.parent).mkdir()
    _copy_project(tiny_pipeline, tmp_path, BASE_MODEL)
    suite = tmp_path / suite_path("extra")
    suite.parent.mkdir(parents=True)
    text = rows_or_text if isinstance(rows_or_text, str) else "".join(json.dumps(r) + "\n" for r in rows_or_text)
    suite.write_text(text)
    shutil.copy(tiny_pipeline / "params.yaml", tmp_path / "params.yaml")


@pytest.mark.slow
def test_unsupported_and_invalid_prompts_are_excluded_counted_and_named(tiny_pipeline, tmp_path):
    _suite_project(tiny_pipeline, tmp_path, IFEVAL_ROWS)
    result = run_stage("evaluate", tmp_path, "--model", "base", "--suite", "extra")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / eval_metrics_path("base", "extra")).read_text())
    assert metrics["n_prompts"] == 3 and metrics["excluded_prompts"] == 2
    assert metrics["unsupported_ids"] == {"keywords:key_sentences": 1}
    assert [i["key"] for i in metrics["invalid_kwargs"]] == [5]
    assert "must be a single character" in metrics["invalid_kwargs"][0]["reason"]
    outcomes = read_jsonl(tmp_path / outcomes_path("base", "extra"), EvalOutcome)
    assert [o.key for o in outcomes] == [1, 2, 4]


@pytest.mark.slow
@pytest.mark.parametrize("content, message", [("", "empty"), ('{"key": 1}\n', "extra.jsonl:1")])
def test_bad_eval_file_is_a_clear_error_with_no_output(tiny_pipeline, tmp_path, content, message):
    _suite_project(tiny_pipeline, tmp_path, content)
    result = run_stage("evaluate", tmp_path, "--model", "base", "--suite", "extra")
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / OUTCOMES_DIR).exists() and not (tmp_path / stage_files("evaluate")).exists()
