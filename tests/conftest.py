import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tiny_model, write_base_manifest  # noqa: E402

from stages.lib.paths import (  # noqa: E402
    ACCELERATE_CONFIGS, CONSTRAINTS, FEWSHOT, TASKS, suite_path,
)


def pytest_configure(config):
    """Under `make test` (pytest-xdist, one worker per core) each worker, and every process it starts, runs on a
    core of its own: torch sizes its threads to the cores a process may use (model.threads: 0), and two workers
    each running two threads on two cores wait on each other at every OpenMP barrier (BENCHMARKS.md)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    if worker.startswith("gw"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})


# Fixtures that run the whole tiny pipeline, or stages in a DVC repo: a test that uses one is `slow`.
SLOW_FIXTURES = {"tiny_pipeline", "reproduced", "prepared"}


def _uses_pipeline(item) -> bool:
    return bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config, items):
    """The quick tier (`-m "not slow"`) must stay quick: a test that uses a slow fixture without the mark
    stops the collection, naming it. The tests that read the tiny pipeline go last, so that under pytest-xdist
    one worker reproduces it (``build_pipeline_early``) while the others run everything else."""
    unmarked = [item.nodeid for item in items if _uses_pipeline(item) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("mark these tests @pytest.mark.slow (they use " + ", ".join(sorted(SLOW_FIXTURES))
                                + "):\n  " + "\n  ".join(unmarked))
    items.sort(key=_uses_pipeline)  # stable: otherwise collection order


@pytest.fixture(scope="session", autouse=True)
def build_pipeline_early(request):
    """Under pytest-xdist with two or more workers, the first worker reproduces the session's tiny pipeline
    before its first test when any selected test needs it; the other workers meanwhile run the tests that do not."""
    several = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
    if several and os.environ.get("PYTEST_XDIST_WORKER") == "gw0" and any(map(_uses_pipeline, request.session.items)):
        request.getfixturevalue("reproduced")


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A tiny Llama saved as a plain Hugging Face directory (what a user points model.name_or_path at)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture()
def tiny_base(tiny_hf_dir, tmp_path) -> Path:
    """The tiny model laid out like prepare_base's output (models/base), private to one test."""
    base = tmp_path / "base"
    shutil.copytree(tiny_hf_dir, base)
    write_base_manifest(base)
    return base


def run_stage(module: str, cwd: Path, *args: str, timeout: int = 600, env: dict | None = None):
    """Run ``python -m stages.<module>`` in ``cwd`` as DVC would, with the project importable (``env``: extra
    environment variables)."""
    import os
    import subprocess

    env = dict(os.environ, **(env or {}), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", f"stages.{module}", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def write_params(directory: Path, **sections) -> Path:
    """params.yaml for a test: the project's defaults with ``sections`` merged in, key by key."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(params.get(section), dict):
            params[section].update(values)
        else:
            params[section] = values
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# Settings that make every stage run in seconds on the tiny model. Generation from a random model
# is gibberish, so placeholders are allowed and preference margins may be zero. The tiny tokenizer has
# 400 tokens, so a zero-shot prompt is about 200 tokens: max_length must hold it with its completion
# (train_sft refuses a record that truncation would leave without a completion token).
TINY_SETTINGS = {
    "make_instructions": {"n_train": 16, "n_dev": 6, "n_test": 8},
    "generate_sft": {"samples_per_prompt": 2, "max_samples_per_prompt": 2, "n_shots": 2, "max_new_tokens": 12,
                     "batch_size": 8, "placeholder_fallback": True, "max_failed_rate": 1.0, "min_kept_pass_rate": 0.0},
    "train_sft": {"max_steps": 2, "batch_size": 4, "max_length": 512, "eval_fraction": 0.25},
    "build_prefs": {"samples_per_prompt": 2, "max_new_tokens": 12, "batch_size": 8, "min_margin": 0.0},
    "train_dpo": {"max_steps": 2, "batch_size": 4, "max_length": 512},
    "evaluate": {"max_new_tokens": 12, "batch_size": 8, "suites": ["test", "handwritten"]},
    "report": {"bootstrap_samples": 200},
}
DATA_FILES = tuple(p.as_posix() for p in (TASKS, CONSTRAINTS, FEWSHOT, suite_path("handwritten")))


def make_tiny_project(directory: Path, model_dir: Path, **overrides) -> Path:
    """A project folder (data files + params.yaml) whose model is the tiny one."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel in DATA_FILES:
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, directory / rel)
    sections = {k: dict(v) for k, v in TINY_SETTINGS.items()}
    sections["model"] = {"name_or_path": str(model_dir), "dtype": "float32"}
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    write_params(directory, **sections)
    return directory


@pytest.fixture(scope="session")
def tasks():
    """The curated tasks (data/tasks.jsonl)."""
    from stages.lib.records import Task, read_jsonl

    return read_jsonl(ROOT / TASKS, Task)


@pytest.fixture(scope="session")
def config():
    """The curated constraints (data/constraints.yaml), parsed as make_instructions parses them."""
    import yaml

    from stages.lib import checkers, constraint_schema

    return constraint_schema.parse_constraints(yaml.safe_load((ROOT / CONSTRAINTS).read_text()),
                                               checkers.SUPPORTED_IDS)


@pytest.fixture(scope="session")
def reproduced(tiny_hf_dir, tmp_path_factory):
    """The session's one tiny pipeline in a git + DVC repo, reproduced once and committed (read-only)."""
    from dvc_repos import reproduced_repo  # it imports this module

    return reproduced_repo(tmp_path_factory, tiny_hf_dir)


@pytest.fixture()
def work_repo(reproduced, tmp_path) -> Path:
    """A whole copy of the reproduced repo, for a test that changes it."""
    from dvc_repos import copy_repo

    return copy_repo(reproduced.repo, tmp_path / "repo")


@pytest.fixture(scope="session")
def tiny_pipeline(reproduced) -> Path:
    """The tiny project run through every stage once (the reproduced DVC repo, shared with the DVC tests, so
    the pipeline runs once per session); tests read its outputs, never write them."""
    return reproduced.repo


PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "stages", ACCELERATE_CONFIGS.as_posix(),
                 *DATA_FILES)


def dvc_env() -> dict:
    """The environment DVC runs stage commands in: this venv's python first on PATH."""
    import os

    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
                DVC_NO_ANALYTICS="1")


def sh(cwd: Path, *cmd: str, check: bool = True, timeout: int = 900):
    import subprocess

    result = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_dvc_repo(directory: Path, model_dir: Path, **overrides) -> Path:
    """A fresh git + DVC repo holding this project's pipeline, configured for the tiny model."""
    directory.mkdir(parents=True)
    for rel in PROJECT_FILES:
        src, dst = ROOT / rel, directory / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    make_tiny_project(directory, model_dir, **overrides)
    sh(directory, "git", "init", "-q")
    sh(directory, "dvc", "init", "-q")
    sh(directory, "dvc", "config", "core.autostage", "true")
    sh(directory, "git", "add", "-A")
    sh(directory, "git", "commit", "-qm", "pipeline")
    return directory


def stages_run(output: str) -> list[str]:
    """Names of the stages a dvc command actually ran, from its output."""
    import re

    return re.findall(r"Running stage '([^']+)'", output)
