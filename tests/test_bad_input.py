"""Bad input across the pipeline, through the real dvc and the stage commands: each case exits non-zero
with one clear message, writes no partial output, and loses nothing: what dvc removed before running the
failing stage comes back from the cache with `dvc checkout`, and the repo ends exactly as it started.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from conftest import sh
from dvc_repos import cache_files, copy_repo, say, set_param, snapshot, status

from stages.lib.base_model import BASE_MANIFEST
from stages.lib.paths import ACCELERATE_CONFIGS, BASE_MODEL, SFT_ADAPTER, SFT_DATA, suite_path

pytestmark = pytest.mark.slow  # the real dvc on the tiny pipeline


def _corrupt_params(repo: Path) -> None:
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("train_dpo:\n", "train_dpo: [unclosed\n", 1))


def _truncate_sft_data(repo: Path) -> None:
    path = repo / SFT_DATA
    data = path.read_bytes()
    cut = len(data) // 2
    while b"\n" in data[cut - 1:cut + 1]:  # cut inside a line, never at either end of one
        cut += 1
    path.write_bytes(data[:cut])


def _missing_model(repo: Path) -> None:
    set_param(repo, "model.name_or_path", str(repo.parent / "no-such-model"))


def _delete_adapter(repo: Path) -> None:
    import shutil

    shutil.rmtree(repo / SFT_ADAPTER)


def _empty_eval_file(repo: Path) -> None:
    (repo / suite_path("empty")).write_text("")
    set_param(repo, "evaluate.suites", ["empty"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unreachable_remote(repo: Path) -> None:
    sh(repo, "dvc", "remote", "add", "dead", "s3://nowhere/pipeline")
    sh(repo, "dvc", "remote", "modify", "dead", "endpointurl", f"http://127.0.0.1:{_closed_port()}")
    sh(repo, "dvc", "remote", "modify", "dead", "region", "us-east-1")
    sh(repo, "dvc", "remote", "modify", "dead", "connect_timeout", "1")
    sh(repo, "dvc", "remote", "modify", "dead", "read_timeout", "1")
    sh(repo, "dvc", "remote", "modify", "--local", "dead", "access_key_id", "fake")
    sh(repo, "dvc", "remote", "modify", "--local", "dead", "secret_access_key", "fake")


def _eval_file(lines: list[bytes]):
    """An evaluation suite (data/suites/bad.jsonl, in evaluate.suites) made of ``lines``."""
    def breaks(repo: Path) -> None:
        (repo / BAD).write_bytes(b"".join(line + b"\n" for line in lines))
        set_param(repo, "evaluate.suites", ["bad"])
    return breaks


BAD = suite_path("bad")
GOOD_PROMPT = b'{"key": 1, "prompt": "Name a colour.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}'


def _param(dotted: str, value):
    return lambda repo: set_param(repo, dotted, value)


def _outside_config(repo: Path) -> None:
    import shutil

    shutil.copy(repo / ACCELERATE_CONFIGS / "cpu_ddp.yaml", repo.parent / "mine.yaml")
    set_param(repo, "train_sft.accelerate_config", str(repo.parent / "mine.yaml"))


def _nan_weight(repo: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = repo / BASE_MODEL / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.self_attn.q_proj.weight"][0, 0] = float("nan")
    weights.chmod(0o644)  # DVC leaves checked-out files read-only only with link cache types; be sure
    save_file(tensors, weights, metadata={"format": "pt"})


def _other_host(repo: Path) -> None:
    import json

    path = repo / BASE_MODEL / BASE_MANIFEST
    manifest = json.loads(path.read_text())
    manifest["runtime"]["attn_implementation"] = "flash_attention_2"  # what a CUDA host with flash-attn makes of auto
    path.write_text(json.dumps(manifest))


@dataclass(frozen=True)
class Case:
    breaks: Callable[[Path], None]
    command: tuple[str, ...]
    says: str  # a fragment of the one message the user gets


PY = ("python", "-m")
CASES = {
    "corrupt params.yaml (dvc repro)": Case(_corrupt_params, ("dvc", "repro"), "params.yaml"),
    "corrupt params.yaml (stage)": Case(_corrupt_params, (*PY, "stages.report"), "params.yaml: not valid YAML"),
    "truncated JSONL (dvc repro train_sft)": Case(
        _truncate_sft_data, ("dvc", "repro", "--single-item", "train_sft"), f"{SFT_DATA}:"),
    "missing model directory": Case(_missing_model, ("dvc", "repro"), "no-such-model"),
    "deleted adapter (dvc repro build_prefs)": Case(
        _delete_adapter, ("dvc", "repro", "--single-item", "build_prefs"), str(SFT_ADAPTER)),
    "deleted adapter (stage)": Case(_delete_adapter, (*PY, "stages.build_prefs"),
                                    f"{SFT_ADAPTER}: the SFT adapter is missing"),
    "empty eval file": Case(_empty_eval_file, ("dvc", "repro"), f"{suite_path('empty')}: no records"),
    "unreachable remote": Case(_unreachable_remote, ("dvc", "push", "-r", "dead"), "Could not connect"),
    # issue 13: values no run can use, records no reader should accept, limits, and mismatched machines
    "infinite temperature": Case(_param("generate_sft.temperature", float("inf")), ("dvc", "repro"),
                                 "generate_sft.temperature: Input should be a finite number (got inf)"),
    "seed out of range": Case(_param("train_sft.seed", 2**32), ("dvc", "repro"),
                              "train_sft.seed: Input should be less than or equal to 4294967295"),
    "empty target_modules": Case(
        _param("train_dpo.lora", {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": []}), ("dvc", "repro"),
        "train_dpo.lora.target_modules: Value error, must name at least one"),
    "eval prompts not UTF-8": Case(
        _eval_file([GOOD_PROMPT, '{"key": 2, "prompt": "Caf\xe9?", "instruction_id_list": [], "kwargs": []}'.encode(
            "latin-1")]), ("dvc", "repro"), f"{BAD}:2: not UTF-8 text (byte 26 of the line is 0xe9)"),
    "eval prompts nested too deeply": Case(
        _eval_file([GOOD_PROMPT, b'{"key": 2, "prompt": "x", "instruction_id_list": [], "kwargs": ['
                    + b"[" * 50_000 + b"]" * 50_000 + b"]}"]), ("dvc", "repro"), f"{BAD}:2: nested too deeply"),
    "NaN in eval prompts": Case(
        _eval_file([GOOD_PROMPT, b'{"key": 2, "prompt": "Count.", "instruction_id_list": ["length_constraints:'
                    b'number_words"], "kwargs": [{"num_words": NaN, "relation": "less than"}]}']),
        ("dvc", "repro"), f"{BAD}:2: NaN is not a JSON number"),
    "duplicate eval keys": Case(_eval_file([GOOD_PROMPT, GOOD_PROMPT]), ("dvc", "repro"),
                                f"{BAD}:2: key 1 was already used on line 1"),
    "whitespace-only prompt": Case(
        _eval_file([GOOD_PROMPT, b'{"key": 2, "prompt": "  \\n ", "instruction_id_list": [], "kwargs": []}']),
        ("dvc", "repro"), f"{BAD}:2: invalid Instruction record: prompt: Value error, is blank"),
    "eval prompt longer than the context": Case(
        _eval_file([GOOD_PROMPT, b'{"key": "long", "prompt": "' + b"Describe the harbour at dawn. " * 300
                    + b'", "instruction_id_list": [], "kwargs": []}']), ("dvc", "repro"),
        f"{BAD}: 1 of 2 prompts do not fit the model's context of 2048 tokens"),
    "base model as its own source": Case(_param("model.name_or_path", f"./{BASE_MODEL}"), ("dvc", "repro"),
                                         f"model.name_or_path=./{BASE_MODEL}: is prepare_base's own output"),
    "accelerate config outside configs/": Case(_outside_config, ("dvc", "repro"), f"is outside {ACCELERATE_CONFIGS}/"),
    "train_sft.max_length empties a record": Case(_param("train_sft.max_length", 8), ("dvc", "repro"),
                                                  "train_sft.max_length=8: SFT record key"),
    "NaN weight in the base model": Case(_nan_weight, (*PY, "stages.train_sft"),
                                         "train_sft: the training loss became nan at step 1"),
    "base model from another kind of host": Case(_other_host, (*PY, "stages.evaluate", "--model", "base", "--suite", "test"),
                                                 "this host resolves the model settings differently"),
}


def first_error_line(output: str) -> str:
    for line in output.splitlines():
        if line.lower().startswith("error"):
            return line.strip()
    return next((line.strip() for line in output.splitlines() if line.strip()), "")


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_fails_cleanly(case, reproduced, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    spec = CASES[case]
    repo = copy_repo(reproduced.repo, tmp_path / "repo")
    original, cached = snapshot(repo), cache_files(repo)
    spec.breaks(repo)
    broken = snapshot(repo)

    start = time.monotonic()
    result = sh(repo, *spec.command, check=False, timeout=300)
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    message = first_error_line(result.stderr) or first_error_line(result.stdout)

    assert result.returncode != 0, output[-2000:]
    assert spec.says in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert elapsed < 120
    # No partial output: nothing new, nothing rewritten; dvc may only have removed the failing stage's outputs.
    after = snapshot(repo)
    assert set(after) <= set(broken), f"new files: {sorted(set(after) - set(broken))}"
    rewritten = {p for p in after if after[p] != broken[p]}
    assert rewritten == set(), f"rewritten: {sorted(rewritten)}"
    # Nothing lost: the cache kept everything, and undoing the bad input brings the repo back exactly.
    assert cached <= cache_files(repo)
    # git brings back the tracked files (the bad input, and any `cache: false` metrics dvc removed), the
    # cache brings back the data and models.
    sh(repo, "git", "checkout", "HEAD", "--", ".")
    for extra in set(snapshot(repo)) - set(original):
        (repo / extra).unlink()
    sh(repo, "dvc", "checkout", "--force")
    assert snapshot(repo) == original
    assert status(repo) == {}
    say(capsys, f"{case}: exit {result.returncode} in {elapsed:.1f} s: {message[:200]}")
