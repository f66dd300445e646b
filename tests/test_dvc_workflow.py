"""What DVC promises this pipeline, checked with the real dvc in a real git repo on the tiny model:
exactly what changed recomputes, a no-op repro runs nothing, experiments (a misspelt key, a queued grid),
an interrupted training run leaves nothing DVC takes as valid, and a Hub base model never enters the cache.

One full tiny `dvc repro` runs once per session (tests/dvc_repos.py); each test that changes something
works on a whole copy of that repo.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import pytest
from conftest import dvc_env, sh, stages_run
from dvc_repos import (
    ALL_STAGES, check_rerun_was_exact, downstream_closure, evaluations, experiments_of, queue_statuses,
    queued_grid, read_lock, say, set_param, snapshot, status,
)
from tiny_model import build_tiny_model

from stages.lib.paths import (
    ACCELERATE_CONFIGS, BASE_MODEL, MODELS, SFT_ADAPTER, TASKS, TRAIN_INSTRUCTIONS, curves_dir, eval_metrics_path,
    metrics_path, suite_path,
)

pytestmark = pytest.mark.slow  # the real dvc on the tiny pipeline


# --- 1. Exact recompute -------------------------------------------------------------------------------

SFT_DOWN = {"build_prefs", "train_dpo", "report"} | evaluations("sft", "dpo")
DPO_DOWN = {"report"} | evaluations("dpo")


def _edit_task(pool: str) -> Callable[[Path, Path], list[str]]:
    """Edit the text of one curated task that the ``pool`` instruction file ('train' or 'test') uses."""
    def change(repo: Path, tmp: Path) -> list[str]:
        path = TRAIN_INSTRUCTIONS if pool == "train" else suite_path(pool)
        used = json.loads((repo / path).read_text().splitlines()[0])["task_id"]
        lines = (repo / TASKS).read_text().splitlines()
        for i, line in enumerate(lines):
            task = json.loads(line)
            if task["task_id"] == used:
                task["text"] = task["text"].rstrip("?.!") + ", in plain words."
                lines[i] = json.dumps(task)
        (repo / TASKS).write_text("\n".join(lines) + "\n")
        return [TASKS.as_posix()]
    return change


def _param(dotted: str, value) -> Callable[[Path, Path], list[str]]:
    def change(repo: Path, tmp: Path) -> list[str]:
        set_param(repo, dotted, value)
        return ["params.yaml"]
    return change


def _append_comment(rel: str) -> Callable[[Path, Path], list[str]]:
    def change(repo: Path, tmp: Path) -> list[str]:
        with (repo / rel).open("a") as fh:
            fh.write("# an edit that changes no behaviour\n")
        return [rel]
    return change


def _second_model(repo: Path, tmp: Path) -> list[str]:
    set_param(repo, "model.name_or_path", str(build_tiny_model(tmp / "tiny-2", seed=1)))
    return ["params.yaml"]


@dataclass(frozen=True)
class Row:
    """A row of the README's table. ``direct``: invalidated by the change, always rerun. ``downstream``:
    rerun when an input it reads actually changed (DVC compares content hashes), else skipped.
    ``real``: run a real `dvc repro`; otherwise `dvc status` and `dvc repro --dry [--force-downstream]`.
    ``prefix``: stages run for real first, then ``then`` is what they invalidate (for data whose effect
    depends on which output file changed)."""

    change: Callable[[Path, Path], list[str]]
    direct: frozenset
    downstream: frozenset
    real: bool = False
    prefix: tuple = ()
    then: frozenset = field(default_factory=frozenset)


ROWS = {
    "generate_sft.temperature": Row(_param("generate_sft.temperature", 0.5), frozenset({"generate_sft"}),
                                    frozenset({"train_sft"} | SFT_DOWN)),
    "train_sft.learning_rate": Row(_param("train_sft.learning_rate", 1e-4), frozenset({"train_sft"}),
                                   frozenset(SFT_DOWN)),
    "train_dpo.beta": Row(_param("train_dpo.beta", 0.2), frozenset({"train_dpo"}), frozenset(DPO_DOWN)),
    "train_dpo.init": Row(_param("train_dpo.init", "base"), frozenset({"train_dpo"}), frozenset(DPO_DOWN)),
    "evaluate.max_new_tokens": Row(_param("evaluate.max_new_tokens", 6), evaluations(), frozenset({"report"})),
    "stages/train_dpo.py": Row(_append_comment("stages/train_dpo.py"), frozenset({"train_dpo"}), frozenset(DPO_DOWN),
                               real=True),
    "stages/launch.py": Row(_append_comment("stages/launch.py"), frozenset({"train_sft", "train_dpo"}),
                            frozenset({"build_prefs", "report"} | evaluations("sft", "dpo"))),
    "configs/accelerate (a training config)": Row(
        _append_comment((ACCELERATE_CONFIGS / "ddp.yaml").as_posix()), frozenset({"train_sft", "train_dpo"}),
        frozenset({"build_prefs", "report"} | evaluations("sft", "dpo"))),
    # a component only evaluate and report import, and one every stage imports (tests/test_dvc_yaml.py keeps
    # each stage's list of modules true to its imports)
    "stages/lib/stats.py": Row(_append_comment("stages/lib/stats.py"), evaluations() | {"report"}, frozenset()),
    "stages/lib/params.py": Row(_append_comment("stages/lib/params.py"), frozenset(ALL_STAGES), frozenset()),
    "data/tasks.jsonl (a train task)": Row(
        _edit_task("train"), frozenset({"make_instructions"}),
        frozenset({"generate_sft", "train_sft"} | SFT_DOWN), prefix=("make_instructions",),
        then=frozenset({"generate_sft"})),
    "data/tasks.jsonl (a test task)": Row(
        _edit_task("test"), frozenset({"make_instructions"}),
        frozenset({"report"} | {f"evaluate@{m}-test" for m in MODELS}), prefix=("make_instructions",),
        then=frozenset(f"evaluate@{m}-test" for m in MODELS)),
    # only prepare_base reads it; every stage but report loads models/base, and report reads their outcomes
    "model.name_or_path": Row(_second_model, frozenset({"prepare_base"}), frozenset(ALL_STAGES) - {"prepare_base"}),
}


@pytest.mark.parametrize("row", list(ROWS), ids=list(ROWS))
def test_a_change_reruns_exactly_its_stages(row, work_repo, tmp_path):
    """Each row of the README's recompute table.

    Real `dvc repro` (the stages actually rerun): stages/train_dpo.py here; the SFT-hyperparameter row
    in test_killed_training_leaves_nothing_valid (train_sft.max_steps), train_dpo.learning_rate in
    test_queued_grid_runs_every_experiment_two_at_a_time, train_dpo.init in test_e2e_dvc. The real row here then reverts
    the change and checks that DVC's run cache restores the earlier outputs without recomputing
    (report aside: see below).
    The other rows use `dvc status` (what the change invalidates) and `dvc repro --dry --force-downstream`
    (everything that may follow), and for data/tasks.jsonl a real run of make_instructions first, to see
    which instruction file the edit changes.
    """
    spec, repo = ROWS[row], work_repo
    lock_text = (repo / "dvc.lock").read_text()
    before = read_lock(repo)
    changed_files = spec.change(repo, tmp_path)

    assert set(status(repo)) == spec.direct, "the change invalidates other stages than the table says"
    assert spec.downstream <= downstream_closure(repo, spec.direct)

    if spec.real:
        out = sh(repo, "dvc", "repro")
        check_rerun_was_exact(before, read_lock(repo), stages_run(out.stdout), set(spec.direct),
                              set(spec.downstream), repo)
        # Going back costs nothing: DVC's run cache restores the earlier outputs without recomputing.
        # Except report: its metrics/report.md is a plain `cache: false` output, and DVC keeps no run
        # cache for a stage with one, so it reruns (a few seconds, no model involved).
        sh(repo, "git", "checkout", "HEAD", "--", *changed_files)
        back = sh(repo, "dvc", "repro")
        rerun = stages_run(back.stdout)
        assert set(rerun) <= {"report"}, back.stdout
        assert "is cached - skipping run" in back.stdout
        assert {k: v for k, v in read_lock(repo).items() if k not in rerun} == \
            {k: v for k, v in before.items() if k not in rerun}
        assert status(repo) == {}
        return

    untouched = snapshot(repo)
    if spec.prefix:
        ran = stages_run(sh(repo, "dvc", "repro", *spec.prefix).stdout)
        assert ran == list(spec.prefix)
        assert set(status(repo)) == spec.then, "the edit reached other instruction files than expected"
        direct_now, may_follow = spec.then, spec.downstream
    else:
        direct_now, may_follow = spec.direct, spec.direct | spec.downstream
        assert set(stages_run(sh(repo, "dvc", "repro", "--dry").stdout)) == spec.direct
    forced = stages_run(sh(repo, "dvc", "repro", "--dry", "--force-downstream").stdout)
    assert set(forced) == set(may_follow), f"dry run with --force-downstream: {forced}"
    assert set(direct_now) <= set(forced)
    if not spec.prefix:
        assert snapshot(repo) == untouched, "a dry run changed the workspace"
        assert (repo / "dvc.lock").read_text() == lock_text


def test_noop_repro_reruns_nothing(reproduced, capsys):
    """After a full run is committed, `dvc repro` runs no stage; its wall time is printed."""
    assert set(reproduced.first_run) == set(ALL_STAGES)
    start = time.monotonic()
    out = sh(reproduced.repo, "dvc", "repro")
    elapsed = time.monotonic() - start
    assert stages_run(out.stdout) == [], out.stdout
    assert "didn't change, skipping" in out.stdout
    assert status(reproduced.repo) == {}
    say(capsys, f"full tiny dvc repro: {reproduced.full_repro_s:.1f} s; no-op dvc repro: {elapsed:.2f} s")
    assert elapsed < 30


def test_bytecode_caches_invalidate_nothing(work_repo):
    """Python writes __pycache__ beside every module it imports (unless PYTHONDONTWRITEBYTECODE is set);
    those files are not inputs, so they must not change the hash of `stages` or `stages/lib`."""
    for package in ("stages", "stages/lib"):
        cache = work_repo / package / "__pycache__"
        cache.mkdir()
        (cache / "io.cpython-311.pyc").write_bytes(b"\x00" * 16)
    assert status(work_repo) == {}


# --- 2. Experiments -----------------------------------------------------------------------------------

def test_misspelt_param_key_is_refused(work_repo):
    """`-S train_dpo.betta=0.2`: dvc refuses to add a key params.yaml lacks and changes nothing. Forcing the new
    key (`-S +train_dpo.betta=0.2`, what dvc suggests) reaches the schema, which names the key: the experiment
    fails, no experiment is recorded and no output is written; what dvc removed before running the stage
    comes back with `dvc checkout`."""
    repo = work_repo
    before = snapshot(repo)

    refused = sh(repo, "dvc", "exp", "run", "-S", "train_dpo.betta=0.2", check=False)
    assert refused.returncode != 0
    assert "train_dpo.betta" in refused.stderr + refused.stdout
    assert snapshot(repo) == before

    forced = sh(repo, "dvc", "exp", "run", "-S", "+train_dpo.betta=0.2", check=False)
    out = forced.stdout + forced.stderr
    assert forced.returncode != 0
    assert "train_dpo.betta: unknown key" in out, out[-2000:]
    assert stages_run(forced.stdout) == ["train_dpo"]
    assert sh(repo, "dvc", "exp", "list").stdout.strip() == ""
    after = snapshot(repo)
    assert set(after) <= set(before), f"new files: {set(after) - set(before)}"
    assert {p for p in after if after[p] != before[p]} == {"params.yaml"}

    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout")
    assert snapshot(repo) == before
    assert status(repo) == {}


@pytest.fixture(scope="session")
def grid(tmp_path_factory, reproduced):
    return queued_grid(tmp_path_factory, reproduced)


def test_queued_grid_runs_every_experiment_two_at_a_time(grid, capsys):
    """`dvc exp run --queue -S train_dpo.learning_rate=1e-5,2e-5` and `dvc queue start -j 2`: DVC writes the rates as
    `1e-05` and `2e-05` (YAML 1.1 strings, YAML 1.2 numbers); both experiments run side by side in their own
    workspaces and succeed; each reran train_dpo and, where its input changed, what follows it, never the
    stages before; `dvc exp show --json` lists each one's rate, as a number, and its metrics."""
    repo = grid["repo"]
    assert len(grid["names"]) == 2
    assert queue_statuses(grid["status"]) == ["Success", "Success"], grid["status"] + "".join(
        sh(repo, "dvc", "queue", "logs", n, check=False).stdout[-2000:] for n in grid["names"])
    assert grid["most_at_once"] == 2, (f"the two experiments never ran at the same time: {grid['timeline']}; "
                                       f"workers started again after the broker race: {grid['restarted_workers']}")

    exps = experiments_of(json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout))
    assert set(grid["names"]) <= set(exps), exps.keys()
    rates = sorted(exps[n]["params"]["params.yaml"]["data"]["train_dpo"]["learning_rate"] for n in grid["names"])
    assert rates == [1e-05, 2e-05]
    for name in grid["names"]:
        metrics = exps[name]["metrics"]
        accuracy = metrics[eval_metrics_path("dpo", "test").as_posix()]["data"]["overall"]["prompt_strict"]["accuracy"]
        assert 0.0 <= accuracy <= 1.0
        assert metrics_path("train_dpo").as_posix() in metrics and metrics_path("report").as_posix() in metrics
        ran = set(stages_run(sh(repo, "dvc", "queue", "logs", name).stdout))
        assert "train_dpo" in ran and ran <= {"train_dpo"} | DPO_DOWN, ran
    say(capsys, f"queued grid train_dpo.learning_rate=1e-5,2e-5 with -j 2: {grid['elapsed']:.0f} s for both")


# --- 4. Interruption ----------------------------------------------------------------------------------

LIVE_LOSS = curves_dir("train_sft") / "loss.tsv"


def _start_repro(repo: Path, log: Path) -> subprocess.Popen:
    # Its own session, so that a signal to the group reaches dvc and its stage, never the test runner.
    # Unbuffered, so that the trainer's step logs reach the log file as they happen.
    with log.open("w") as fh:
        return subprocess.Popen(["dvc", "repro"], cwd=repo, env=dict(dvc_env(), PYTHONUNBUFFERED="1"), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_until_training(proc: subprocess.Popen, log: Path, timeout: float = 300) -> psutil.Process:
    """The train_sft process, once the trainer has logged at least one training step. (The curves appear in
    the repo only when training has succeeded, so the log is where a step shows.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "dvc repro ended before training started"
        if "{'loss':" in log.read_text(errors="replace"):
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if "stages.train_sft" in " ".join(child.cmdline()):
                        return child
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.1)
    raise AssertionError("train_sft did not start training in time")


def _assert_nothing_valid(repo: Path, lock_text: str) -> None:
    assert (repo / "dvc.lock").read_text() == lock_text, "an interrupted run changed dvc.lock"
    changed = status(repo)
    assert "train_sft" in changed, changed
    assert not (repo / SFT_ADAPTER).exists() and not (repo / metrics_path("train_sft")).exists()
    assert not (repo / LIVE_LOSS).exists(), "an interrupted run left partial training curves"
    leftovers = [p for p in snapshot(repo) if re.search(r"(^|/)\.[^/]+\.(tmp|old)(/|$)", p)]
    assert leftovers == [], leftovers


def test_killed_training_leaves_nothing_valid(work_repo, tmp_path, capsys):
    """train_sft.max_steps=40 (several seconds of training on the tiny model). First SIGTERM to the train_sft process
    once it has logged a step; then, in a second `dvc repro`, SIGKILL to dvc and train_sft together (a
    crash). After each: dvc.lock unchanged, `dvc status` reports train_sft, no models/sft, no temp files.
    Then `dvc repro` (same params) completes; it is also the SFT-hyperparameter row of the recompute table,
    run for real."""
    repo = work_repo
    set_param(repo, "train_sft.max_steps", 40)
    sh(repo, "git", "commit", "-qam", "a longer SFT run")
    lock_text = (repo / "dvc.lock").read_text()
    before = read_lock(repo)
    assert set(status(repo)) == {"train_sft"}

    proc = _start_repro(repo, tmp_path / "term.log")
    try:
        _wait_until_training(proc, tmp_path / "term.log").send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "term.log").read_text()
    # DVC runs the stage through a shell: it reports -15 when the shell exec'd the stage, 143 (128 + 15)
    # when the shell forked it and died of the signal's exit status. Either way the stage was terminated.
    assert proc.returncode != 0 and re.search(r"exited with (-15|143)\b", log), log[-2000:]
    _assert_nothing_valid(repo, lock_text)

    proc = _start_repro(repo, tmp_path / "kill.log")
    try:
        _wait_until_training(proc, tmp_path / "kill.log")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    for _ in range(50):  # the killed stage process goes with its group; make sure it has
        if not any("stages.train_sft" in " ".join(p.info["cmdline"] or []) and str(repo) in (p.info["cwd"] or "")
                   for p in psutil.process_iter(["cmdline", "cwd"])):
            break
        time.sleep(0.1)
    _assert_nothing_valid(repo, lock_text)

    start = time.monotonic()
    out = sh(repo, "dvc", "repro")
    check_rerun_was_exact(before, read_lock(repo), stages_run(out.stdout), {"train_sft"},
                          downstream_closure(repo, {"train_sft"}), repo)
    assert read_lock(repo)["train_sft"]["params"]["params.yaml"]["train_sft"]["max_steps"] == 40
    say(capsys, f"repro after two interrupted runs: {time.monotonic() - start:.0f} s, reran {stages_run(out.stdout)}")


# --- 6. Large artifacts -------------------------------------------------------------------------------

def test_hub_base_model_is_pinned_not_copied(tiny_hf_dir, tmp_path):
    """prepare_base with a Hub id records id@commit and fetches only config and tokenizer: models/base holds
    no weights, so a large model never enters the DVC cache. The hub is unreachable here, so the tiny model
    sits in a Hugging Face cache laid out as a download leaves it, read offline (HF_HUB_OFFLINE=1)."""
    from conftest import run_stage, write_params
    from tiny_model import fake_hub_cache

    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = fake_hub_cache(tmp_path / "hf", tiny_hf_dir, "HuggingFaceTB/SmolLM2-135M", commit, refs={"v1.0": commit})
    write_params(tmp_path, model={"name_or_path": "HuggingFaceTB/SmolLM2-135M", "revision": "v1.0"})
    result = run_stage("prepare_base", tmp_path, env={"HF_HOME": str(cache), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]

    base = tmp_path / BASE_MODEL
    manifest = json.loads((base / "base.json").read_text())
    assert (manifest["source"], manifest["name_or_path"], manifest["revision"], manifest["weights"]) == (
        "hub", "HuggingFaceTB/SmolLM2-135M", commit, "hub")
    weights = [p.name for p in base.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".gguf"}]
    assert weights == [] and (base / "config.json").is_file()
    assert sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) < 1_000_000
