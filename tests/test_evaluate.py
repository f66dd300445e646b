"""Evaluation: one clean model per run, unsupported ids excluded and counted, IFEval's input format."""
import json
import shutil

import pytest
from conftest import run_stage, write_params

from pathlib import Path

from stages.lib.paths import eval_metrics_path, outcomes_path
from stages.lib.records import EvalOutcome, read_jsonl


def _copy_project(src, dst, *rels):
    for rel in rels:
        (shutil.copytree if (src / rel).is_dir() else shutil.copy)(src / rel, dst / rel)


def test_base_evaluated_after_an_adapter_in_the_same_process_is_the_base(tiny_pipeline, tmp_path, monkeypatch):
    from stages import evaluate

    (tmp_path / "models").mkdir()
    (tmp_path / "data/suites").mkdir(parents=True)
    _copy_project(tiny_pipeline, tmp_path, "params.yaml", "models/base", "models/sft", "data/suites/test.jsonl")
    monkeypatch.chdir(tmp_path)
    evaluate.main(["--model", "sft", "--suite", "test"])
    evaluate.main(["--model", "base", "--suite", "test"])
    here = read_jsonl(tmp_path / outcomes_path("base", "test"), EvalOutcome)
    alone = read_jsonl(tiny_pipeline / outcomes_path("base", "test"), EvalOutcome)  # its own process
    assert [o.response for o in here] == [o.response for o in alone]


@pytest.mark.parametrize("suite", ["test", "handwritten"])
def test_every_model_is_scored_on_the_same_prompts(tiny_pipeline, suite):
    keys = {m: [o.key for o in read_jsonl(tiny_pipeline / outcomes_path(m, suite), EvalOutcome)]
            for m in ("base", "sft", "dpo")}
    assert keys["base"] == keys["sft"] == keys["dpo"]
    precisions = {json.dumps(json.loads((tiny_pipeline / eval_metrics_path(m, suite)).read_text())["precision"])
                  for m in ("base", "sft", "dpo")}
    assert len(precisions) == 1


def test_dpo_folder_holds_its_whole_adapter_stack(tiny_pipeline):
    """dpo.init=sft (the tiny pipeline's default): models/dpo keeps the SFT adapter it started from, byte for
    byte, so evaluate@dpo needs models/base and models/dpo only."""
    from stages.evaluate import adapters_for

    start = tiny_pipeline / "models/dpo/start"
    assert (start / "adapter_model.safetensors").read_bytes() == \
        (tiny_pipeline / "models/sft/adapter_model.safetensors").read_bytes()
    import os
    cwd = os.getcwd()
    os.chdir(tiny_pipeline)
    try:
        assert adapters_for("dpo") == [Path("models/dpo/start"), Path("models/dpo")]
        assert adapters_for("sft") == [Path("models/sft")] and adapters_for("base") == []
    finally:
        os.chdir(cwd)


def _suite_project(tiny_pipeline, tmp_path, rows_or_text) -> None:
    (tmp_path / "models").mkdir()
    _copy_project(tiny_pipeline, tmp_path, "models/base")
    suite = tmp_path / "data/suites/extra.jsonl"
    suite.parent.mkdir(parents=True)
    text = rows_or_text if isinstance(rows_or_text, str) else "".join(json.dumps(r) + "\n" for r in rows_or_text)
    suite.write_text(text)
    shutil.copy(tiny_pipeline / "params.yaml", tmp_path / "params.yaml")


def test_unsupported_ids_are_excluded_and_counted(tiny_pipeline, tmp_path):
    rows = [  # IFEval's own input format: None-valued kwargs and no category
        {"key": 1, "prompt": "Write a haiku about rain. Do not use commas.",
         "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"language": None}]},
        {"key": 2, "prompt": "Answer in French: what is the capital of Italy?",
         "instruction_id_list": ["language:response_language"], "kwargs": [{"language": "fr"}]},
        {"key": 3, "prompt": "Answer in German in lowercase.",
         "instruction_id_list": ["language:response_language", "change_case:english_lowercase"],
         "kwargs": [{"language": "de"}, {}]},
    ]
    _suite_project(tiny_pipeline, tmp_path, rows)
    result = run_stage("evaluate", tmp_path, "--model", "base", "--suite", "extra")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / eval_metrics_path("base", "extra")).read_text())
    assert metrics["n_prompts"] == 1 and metrics["excluded_prompts"] == 2
    assert metrics["unsupported_ids"] == {"language:response_language": 2}
    outcomes = read_jsonl(tmp_path / outcomes_path("base", "extra"), EvalOutcome)
    assert [o.key for o in outcomes] == [1]


@pytest.mark.parametrize("content, message", [("", "empty"), ('{"key": 1}\n', "extra.jsonl:1")])
def test_bad_eval_file_is_a_clear_error_with_no_output(tiny_pipeline, tmp_path, content, message):
    _suite_project(tiny_pipeline, tmp_path, content)
    result = run_stage("evaluate", tmp_path, "--model", "base", "--suite", "extra")
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "data/eval").exists() and not (tmp_path / "metrics/eval").exists()
