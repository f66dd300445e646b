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
from dvc_repos import cache_files, copy_repo, reproduced_repo, say, set_param, snapshot, status


@pytest.fixture(scope="session")
def reproduced(tiny_hf_dir, tmp_path_factory):
    return reproduced_repo(tmp_path_factory, tiny_hf_dir)


def _corrupt_params(repo: Path) -> None:
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("dpo:\n", "dpo: [unclosed\n", 1))


def _truncate_sft_data(repo: Path) -> None:
    path = repo / "data/sft/train.jsonl"
    data = path.read_bytes()
    cut = len(data) // 2
    while b"\n" in data[cut - 1:cut + 1]:  # cut inside a line, never at either end of one
        cut += 1
    path.write_bytes(data[:cut])


def _missing_model(repo: Path) -> None:
    set_param(repo, "model.name_or_path", str(repo.parent / "no-such-model"))


def _delete_adapter(repo: Path) -> None:
    import shutil

    shutil.rmtree(repo / "models/sft")


def _empty_eval_file(repo: Path) -> None:
    (repo / "data/empty.jsonl").write_text("")
    set_param(repo, "eval.prompts", "data/empty.jsonl")


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
        _truncate_sft_data, ("dvc", "repro", "--single-item", "train_sft"), "data/sft/train.jsonl:"),
    "missing model directory": Case(_missing_model, ("dvc", "repro"), "no-such-model"),
    "deleted adapter (dvc repro build_prefs)": Case(
        _delete_adapter, ("dvc", "repro", "--single-item", "build_prefs"), "models/sft"),
    "deleted adapter (stage)": Case(_delete_adapter, (*PY, "stages.build_prefs"),
                                    "models/sft: the SFT adapter is missing"),
    "empty eval file": Case(_empty_eval_file, ("dvc", "repro"), "data/empty.jsonl: no records"),
    "unreachable remote": Case(_unreachable_remote, ("dvc", "push", "-r", "dead"), "Could not connect"),
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
