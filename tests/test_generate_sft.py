"""The generate_sft stage on the tiny model: the stored prompt reproduces its completion, placeholders say so
and are gated, bad input fails cleanly with nothing written, and the output is byte-identical per seed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_project, run_stage, write_params

from stages import generate_sft
from stages.lib.cleaning import clean
from stages.lib.generation import GenerationSettings, Sample, generate
from stages.lib.hardware import resolve_precision
from stages.lib.loader import load_model, load_tokenizer
from stages.lib.paths import BASE_MODEL, SFT_DATA, SFT_DATA_DIR, SFT_DATA_MANIFEST, TRAIN_INSTRUCTIONS, metrics_path
from stages.lib.prompts import zero_shot_prompt, NEXT_TURN_MARKERS, REVISION_MARKERS, as_completion, revision_stop_strings, stop_strings
from stages.lib.records import SftExample, read_jsonl
from stages.lib.sft_data import PLACEHOLDER_TEXT, record_score

pytestmark = pytest.mark.slow  # runs generate_sft on a tiny model

METRICS = metrics_path("generate_sft")


@pytest.fixture(scope="module")
def chaotic_hf_dir(tiny_hf_dir, tmp_path_factory) -> Path:
    """The tiny model with large random weights. The plain tiny model answers every prompt with colons (no
    word, so never a valid response); this one writes varied gibberish, some of it valid, and its end of
    sequence is made likely (its output row scaled up), so some answers finish before the token limit."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("chaotic") / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.5)
        model.get_output_embeddings().weight[tokenizer.eos_token_id] *= 3
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def prepared(chaotic_hf_dir, tmp_path_factory) -> Path:
    """A project with models/base and data/instructions made by their stages; tests work on copies."""
    project = make_tiny_project(tmp_path_factory.mktemp("sft") / "project", chaotic_hf_dir,
                                generate_sft={"max_new_tokens": 16, "placeholder_fallback": False,
                                              "max_failed_rate": 0.9})
    for stage in ("prepare_base", "make_instructions"):
        result = run_stage(stage, project)
        assert result.returncode == 0, result.stderr[-3000:]
    return project


@pytest.fixture()
def project(prepared, tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(prepared, copy)
    monkeypatch.chdir(copy)
    return copy


def set_generate(project: Path, **values) -> None:
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    write_params(project, **{k: v for k, v in params.items() if k != "generate_sft"},
                 generate_sft={**params["generate_sft"], **values})


def records(project: Path) -> list[SftExample]:
    return read_jsonl(project / SFT_DATA, SftExample)


def assert_no_output(project: Path) -> None:
    assert not (project / SFT_DATA_DIR).exists()
    assert not (project / METRICS).exists()


def regenerate(project: Path, rec: SftExample, **generate_params) -> str:
    """The completion a stored record's generation_prompt gives on its own (its seed and sample index, same
    settings, the stop strings of its route)."""
    gen = {**json.loads((project / SFT_DATA_MANIFEST).read_text())["generation"], **generate_params}
    base = project / BASE_MODEL
    model, tokenizer = load_model(base, resolve_precision("float32")), load_tokenizer(base)
    settings = GenerationSettings(gen["max_new_tokens"], gen["temperature"], gen["top_p"], gen["repetition_penalty"],
                                  gen["batch_size"], rec.sample_seed)
    revised = rec.source == "revised"
    stops = revision_stop_strings(gen["delimiter"]) if revised else stop_strings(gen["delimiter"])
    sample = generate(model, tokenizer, [rec.generation_prompt], settings, stop_strings=stops,
                      samples_per_prompt=rec.sample_index + 1)[0][rec.sample_index]
    markers = NEXT_TURN_MARKERS + (REVISION_MARKERS if revised else ())
    return as_completion(clean(sample.text, gen["delimiter"], sample.hit_token_limit, markers).text)


def drawn_records(project: Path) -> list[SftExample]:
    return [r for r in records(project) if r.source != "placeholder"]


# --- the stored prompt is the prompt that produced the completion ------------------------------------------


def test_stored_generation_prompt_reproduces_the_completion_greedy(project):
    set_generate(project, temperature=0.0)
    result = run_stage("generate_sft", project)
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = drawn_records(project)
    assert drawn, "the tiny model should produce at least one usable response"
    for rec in drawn:
        if rec.source == "revised":
            assert rec.generation_prompt.endswith("Revised response:")
        else:  # few-shot examples, then the zero-shot prompt of the instruction it was drawn for
            assert rec.generation_prompt.endswith(zero_shot_prompt(rec.original_instruction or rec.instruction))
        assert regenerate(project, rec) == rec.completion


def test_sampled_records_are_byte_identical_per_seed_and_reproducible_from_their_prompt(project):
    set_generate(project, temperature=0.9, top_p=0.95)
    first = run_stage("generate_sft", project)
    assert first.returncode == 0, first.stderr[-3000:]
    data = (project / SFT_DATA).read_bytes()
    again = run_stage("generate_sft", project)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (project / SFT_DATA).read_bytes() == data
    model_records = drawn_records(project)
    assert model_records
    # Per-row seeds: in float32 (as here) a sampled record is regenerated from its prompt, the seed and its
    # sample index alone (bfloat16 rounding depends on the batch, so there only whole runs reproduce).
    for rec in model_records[:4]:
        assert regenerate(project, rec) == rec.completion
    set_generate(project, temperature=0.9, top_p=0.95, seed=1)
    other = run_stage("generate_sft", project)
    assert other.returncode == 0, other.stderr[-3000:]
    assert (project / SFT_DATA).read_bytes() != data
    manifest = json.loads((project / SFT_DATA_MANIFEST).read_text())
    assert manifest["generation"]["seed"] == 1 and "sampling" in manifest


# --- placeholders ------------------------------------------------------------------------------------------


def _scripted_generate(bad_every: int, text: str = " A plain answer with words."):
    """Stand-in for generate(): prompt i of a call gets only invalid samples when i % bad_every == 0."""
    def fake(model, tokenizer, prompts, settings, *, stop_strings=(), samples_per_prompt=1, desc=""):
        out = []
        for i, _ in enumerate(prompts):
            answer = "\n###\n" if i % bad_every == 0 else text
            out.append([Sample(answer, 5, False) for _ in range(samples_per_prompt)])
        return out
    return fake


def test_placeholders_are_marked_and_counted(project, monkeypatch):
    monkeypatch.setattr(generate_sft, "generate", _scripted_generate(3))
    set_generate(project, placeholder_fallback=True, max_failed_rate=0.5, min_kept_pass_rate=0.0)
    generate_sft.main()
    recs = records(project)
    n = len(read_jsonl(project / TRAIN_INSTRUCTIONS, generate_sft.Instruction))
    assert len(recs) == n
    placeholders = [r for r in recs if r.source == "placeholder"]
    assert len(placeholders) == len(range(0, n, 3))
    for r in placeholders:
        assert r.completion == as_completion(PLACEHOLDER_TEXT) and r.sample_index == -1 and r.strict_score == 0.0
    assert all(r.completion != as_completion(PLACEHOLDER_TEXT) for r in recs if r.source != "placeholder")
    metrics = json.loads((project / METRICS).read_text())
    assert metrics["placeholder_rate"] == round(len(placeholders) / n, 4) == metrics["failed_rate"]
    assert metrics["n_kept"] == n and metrics["n_dropped"] == 0
    assert metrics["by_source"]["placeholder"]["prompt_strict"] == 0.0  # a placeholder never counts as passing


def test_a_failing_response_never_becomes_a_model_record(project, monkeypatch):
    """Every answer fails its instruction as asked (a capital letter and a comma). Without back-translation
    and revision nothing is kept; with them, records come only from those routes, each passing its own
    (rewritten) instruction."""
    monkeypatch.setattr(generate_sft, "generate", _scripted_generate(10**9, text=" Yes, A plain answer."))
    set_generate(project, placeholder_fallback=False, max_failed_rate=1.0, revise_rounds=0, backtranslate=False)
    with pytest.raises(SystemExit):
        generate_sft.main()  # no instruction produced a passing response
    assert_no_output(project)
    set_generate(project, placeholder_fallback=False, max_failed_rate=1.0, revise_rounds=1, backtranslate=True)
    generate_sft.main()
    recs = records(project)
    assert recs and not any(r.source == "model" for r in recs)
    for r in recs:
        assert record_score(r.model_dump()).prompt_strict, r
    metrics = json.loads((project / METRICS).read_text())
    assert metrics["kept"]["prompt_strict"] == 1.0 and set(metrics["by_source"]) <= {"revised", "backtranslated"}


def test_without_fallback_failed_instructions_are_dropped_not_faked(project, monkeypatch):
    monkeypatch.setattr(generate_sft, "generate", _scripted_generate(3))
    set_generate(project, placeholder_fallback=False, max_failed_rate=0.5)
    generate_sft.main()
    recs = records(project)
    n = len(read_jsonl(project / TRAIN_INSTRUCTIONS, generate_sft.Instruction))
    assert all(r.source != "placeholder" for r in recs) and len(recs) == n - len(range(0, n, 3))
    metrics = json.loads((project / METRICS).read_text())
    assert metrics["placeholder_rate"] == 0.0 and metrics["n_dropped"] == len(range(0, n, 3))
    assert metrics["failed_rate"] == round(metrics["n_dropped"] / n, 4)


@pytest.mark.parametrize("fallback", [True, False])
def test_too_many_failures_exit_2_with_no_output(project, monkeypatch, capsys, fallback):
    monkeypatch.setattr(generate_sft, "generate", _scripted_generate(2))  # half the instructions fail
    set_generate(project, placeholder_fallback=fallback, max_failed_rate=0.2)
    (project / SFT_DATA_DIR).mkdir(parents=True)
    (project / SFT_DATA).write_text("stale\n")
    with pytest.raises(SystemExit) as exc:
        generate_sft.main()
    assert exc.value.code == 2
    assert "generate_sft.max_failed_rate" in capsys.readouterr().err
    assert_no_output(project)


def test_kept_data_under_the_pass_rate_gate_writes_nothing_and_names_the_key(project, monkeypatch, capsys):
    monkeypatch.setattr(generate_sft, "generate", _scripted_generate(3))  # a third become placeholders
    set_generate(project, placeholder_fallback=True, max_failed_rate=1.0, min_kept_pass_rate=0.95)
    with pytest.raises(SystemExit) as exc:
        generate_sft.main()
    assert exc.value.code == 2
    assert "generate_sft.min_kept_pass_rate" in capsys.readouterr().err
    assert_no_output(project)


# --- bad input -----------------------------------------------------------------------------------------------


def _fails(project: Path, capsys, *fragments: str) -> None:
    (project / SFT_DATA_DIR).mkdir(parents=True, exist_ok=True)
    (project / SFT_DATA).write_text("stale\n")  # an earlier run's output must not survive a failed one
    (project / METRICS).parent.mkdir(parents=True, exist_ok=True)
    (project / METRICS).write_text("{}\n")
    with pytest.raises(SystemExit) as exc:
        generate_sft.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for fragment in map(str, fragments):
        assert fragment in err, err
    assert_no_output(project)


def test_malformed_instruction_line_names_file_and_line(project, capsys):
    lines = (project / TRAIN_INSTRUCTIONS).read_text().splitlines()
    lines[2] = lines[2][:-10]
    (project / TRAIN_INSTRUCTIONS).write_text("\n".join(lines) + "\n")
    _fails(project, capsys, f"{TRAIN_INSTRUCTIONS}:3")


def test_empty_instruction_file_fails(project, capsys):
    (project / TRAIN_INSTRUCTIONS).write_text("")
    _fails(project, capsys, TRAIN_INSTRUCTIONS, "empty")


def test_unknown_instruction_id_fails_naming_it(project, capsys):
    lines = (project / TRAIN_INSTRUCTIONS).read_text().splitlines()
    row = json.loads(lines[1])
    row["instruction_id_list"][0] = "detectable_format:haiku_shape"
    lines[1] = json.dumps(row)
    (project / TRAIN_INSTRUCTIONS).write_text("\n".join(lines) + "\n")
    _fails(project, capsys, TRAIN_INSTRUCTIONS, str(row["key"]), "detectable_format:haiku_shape")


def test_missing_model_fails_without_fallback(project, capsys):
    shutil.rmtree(project / BASE_MODEL)
    _fails(project, capsys, BASE_MODEL)


def test_cli_exit_status_and_no_output_on_bad_input(project):
    (project / TRAIN_INSTRUCTIONS).write_text('{"key": 1, "prompt": "x"\n')
    result = run_stage("generate_sft", project)
    assert result.returncode == 2
    assert f"{TRAIN_INSTRUCTIONS}:1" in result.stderr
    assert_no_output(project)
