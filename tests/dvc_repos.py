"""Shared helpers for the tests that drive the real dvc: one tiny pipeline reproduced once per test
session, copies of it for tests that change it, and the checks those tests have in common.

A full tiny `dvc repro` costs a minute or two on two cores, so it runs once; every test that changes
something works on a whole copy of that repo (.git, .dvc/cache and the workspace), never on the original.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock
from conftest import ROOT, TINY_SETTINGS, dvc_env, make_dvc_repo, sh, stages_run

from stages.lib.paths import MODELS

SUITES = tuple(TINY_SETTINGS["evaluate"]["suites"])  # the tiny pipeline's suites


def evaluations(*models: str) -> frozenset:
    """The evaluate stages of ``models`` (default: all three), one per suite."""
    return frozenset(f"evaluate@{m}-{s}" for m in (models or MODELS) for s in SUITES)


ALL_STAGES = ("prepare_base", "make_instructions", "generate_sft", "train_sft", "build_prefs", "train_dpo",
              *sorted(evaluations()), "report")

# Never part of a workspace snapshot: git's and DVC's own bookkeeping (the cache is checked separately).
_SKIP = (".git", ".dvc/tmp", ".dvc/cache")


@dataclass(frozen=True)
class Reproduced:
    repo: Path
    full_repro_s: float
    first_run: tuple[str, ...]


_memo: dict[str, object] = {}


def reproduced_repo(tmp_path_factory, model_dir: Path) -> Reproduced:
    """The tiny pipeline in a git + DVC repo, reproduced once and committed (dvc.lock, metrics, plots).
    Treat it as read-only: copy it with ``copy_repo`` before changing anything.

    Under pytest-xdist the pipeline runs once for the whole session (``once_per_session``)."""
    def build(directory: Path) -> dict:
        built = _reproduce(directory / "repo", model_dir)
        return {"repo": built.repo, "full_repro_s": built.full_repro_s, "first_run": list(built.first_run)}

    def reproduced() -> Reproduced:
        record = once_per_session(tmp_path_factory, "reproduced", build)
        return Reproduced(record["repo"], record["full_repro_s"], tuple(record["first_run"]))

    return memo("reproduced", reproduced)  # type: ignore[return-value]


def once_per_session(tmp_path_factory, key: str, build) -> dict:
    """``build(folder)`` (a dict whose "repo" is a repo inside folder), run once for the whole test session.

    Under pytest-xdist the first worker to ask builds it in the session's shared folder while the others
    wait for it; each worker then takes its own whole copy of the repo (two workers running dvc in one repo
    would wait on each other's locks). In a single-process run it is built in this process's folder."""
    shared = session_shared_dir(tmp_path_factory)
    if shared is None:
        return build(tmp_path_factory.mktemp(key))
    with FileLock(shared / f"{key}.lock"):
        done = shared / f"{key}.json"
        if not done.exists():
            record = build(shared / key)
            done.write_text(json.dumps(record | {"repo": str(record["repo"])}))
        record = json.loads(done.read_text())
    return record | {"repo": copy_repo(Path(record["repo"]), tmp_path_factory.mktemp(key) / "repo")}


def _reproduce(directory: Path, model_dir: Path) -> Reproduced:
    repo = make_dvc_repo(directory, model_dir)
    install_plot_templates(repo)
    start = time.monotonic()
    out = sh(repo, "dvc", "repro")
    elapsed = time.monotonic() - start
    commit_all(repo, "reproduce the pipeline")
    return Reproduced(repo, round(elapsed, 1), tuple(stages_run(out.stdout)))


def session_shared_dir(tmp_path_factory) -> Path | None:
    """Under pytest-xdist, a folder every worker of this session sees (the parent of the workers' own
    temporary folders); None in a single-process run."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    return tmp_path_factory.getbasetemp().parent


def install_plot_templates(repo: Path) -> None:
    """make_dvc_repo copies the pipeline but not .dvc/plots, the custom plot templates dvc.yaml names."""
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots", dirs_exist_ok=True)
    sh(repo, "git", "add", ".dvc/plots")
    sh(repo, "git", "commit", "-qm", "plot templates")


def commit_all(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", message)


def copy_repo(src: Path, dst: Path) -> Path:
    """A whole, independent copy: git history, DVC cache and workspace."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def say(capsys, line: str) -> None:
    """A measured figure, shown in the test run's output even when the test passes."""
    with capsys.disabled():
        print(f"\n    {line}")


def memo(key: str, build):
    """Build something expensive once per test session, whichever test module asks first."""
    if key not in _memo:
        _memo[key] = build()
    return _memo[key]


# --- reading and changing a repo --------------------------------------------------------------------

def set_param(repo: Path, dotted: str, value) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def read_lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def status(repo: Path, *targets: str) -> dict:
    """`dvc status --json`: the stages whose recorded deps or outs differ from the workspace ({} = clean)."""
    return json.loads(sh(repo, "dvc", "status", "--json", *targets).stdout or "{}")


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(repo: Path) -> dict[str, str]:
    """Every workspace file (not git's or DVC's bookkeeping) and the md5 of its content."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).relative_to(repo).as_posix() not in _SKIP]
        for name in filenames:
            path = Path(dirpath) / name
            files[path.relative_to(repo).as_posix()] = file_md5(path)
    return files


def cache_files(repo: Path) -> set[str]:
    cache = repo / ".dvc" / "cache"
    return {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}


def outputs_digest(repo: Path) -> dict[str, str]:
    """Every file under every output dvc.lock records (cached or not) and its md5."""
    digest = {}
    for stage in read_lock(repo).values():
        for out in stage.get("outs", []):
            path = repo / out["path"]
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            for f in files:
                digest[f.relative_to(repo).as_posix()] = file_md5(f) if f.exists() else "MISSING"
    return digest


def downstream_closure(repo: Path, stages: set[str]) -> set[str]:
    """Every stage that depends, directly or not, on an output of ``stages`` (from dvc.lock's paths)."""
    lock = read_lock(repo)
    outs = {name: [o["path"] for o in s.get("outs", [])] for name, s in lock.items()}
    deps = {name: [d["path"] for d in s.get("deps", [])] for name, s in lock.items()}

    def reads(reader: str, writer: str) -> bool:
        # a dependency is the output, lies inside it, or is a folder holding it (report reads data/eval)
        return any(d == o or d.startswith(o.rstrip("/") + "/") or o.startswith(d.rstrip("/") + "/")
                   for d in deps[reader] for o in outs[writer])

    found, frontier = set(), set(stages)
    while frontier:
        nxt = {r for r in lock if r not in found | stages and any(reads(r, w) for w in frontier)}
        found |= nxt
        frontier = nxt
    return found


def check_rerun_was_exact(before: dict, after: dict, ran: list[str], direct: set[str], downstream: set[str],
                          repo: Path) -> None:
    """The guarantee of a real `dvc repro`: it ran every invalidated stage, a downstream stage only when
    one of its recorded inputs actually changed, nothing else, and left the pipeline clean."""
    ran_set = set(ran)
    assert len(ran) == len(ran_set), f"a stage ran twice: {ran}"
    assert direct <= ran_set, f"invalidated stages that did not rerun: {direct - ran_set} (ran {ran})"
    assert ran_set <= direct | downstream, f"stages that should not have rerun: {ran_set - direct - downstream}"
    for name in ran_set - direct:
        old = {d["path"]: d.get("md5") for d in before[name].get("deps", [])}
        new = {d["path"]: d.get("md5") for d in after[name].get("deps", [])}
        assert old != new, f"{name} reran although none of its inputs changed"
    for name in set(before) - ran_set:
        assert before[name] == after[name], f"{name} did not run but its dvc.lock entry changed"
    assert status(repo) == {}, "the pipeline is not up to date after the repro"


# --- experiments ------------------------------------------------------------------------------------

def queue_statuses(text: str) -> list[str]:
    return re.findall(r"\b(Queued|Running|Success|Failed)\b", text)


def experiments_of(show: list) -> dict[str, dict]:
    """name -> data, for every experiment in `dvc exp show --json`."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") and isinstance(node.get("data"), dict) and node["data"].get("params") is not None \
                    and node.get("rev") != "workspace":
                found[node["name"]] = node["data"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for baseline in show:
        walk(baseline.get("experiments") or [])
    return found


def experiments_running(repo: Path) -> int:
    """How many queued experiments DVC's own records (.dvc/tmp/exps/run/*/*.run) show running right now."""
    running = 0
    for info in (repo / ".dvc/tmp/exps/run").glob("*/*.run"):
        try:
            running += json.loads(info.read_text()).get("status") == 2  # TaskStatus.RUNNING
        except (OSError, ValueError):
            continue  # being rewritten
    return running


# What a DVC queue worker writes to its log once it takes tasks, and what kombu's filesystem broker makes it write
# when two workers start at the same instant and one reads the broker's exchange file while the other rewrites it
# (a known race: treeverse/dvc-task#73). The survivor then runs the whole queue alone.
WORKER_READY, WORKER_LOST_RACE = "ready.", "Unrecoverable error: JSONDecodeError"


def workers_lost_at_start(repo: Path, count: int, timeout: float = 60) -> list[int]:
    """The queue workers 1..count that died starting up on the broker race, once each has either come up or died."""
    logs = [repo / f".dvc/tmp/exps/celery/dvc-exp-worker-{n}.out" for n in range(1, count + 1)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = [log.read_text(errors="replace") if log.exists() else "" for log in logs]
        if all(WORKER_READY in t or WORKER_LOST_RACE in t for t in texts):
            return [n for n, t in enumerate(texts, 1) if WORKER_LOST_RACE in t]  # a lost worker never got ready
        time.sleep(0.5)
    return []


def queued_grid(tmp_path_factory, reproduced) -> dict:
    """`dvc exp run --queue -S train_dpo.learning_rate=1e-5,2e-5`, then `dvc queue start -j 2`, waited for to the
    end, with how many experiments DVC showed running at once (polled every second). A worker that died starting
    up on kombu's broker race is started again, as a user would (`dvc queue start -j 2` once more starts only the
    missing one)."""
    def build(directory: Path) -> dict:
        repo = copy_repo(reproduced.repo, directory / "repo")
        queued = sh(repo, "dvc", "exp", "run", "--queue", "-S", "train_dpo.learning_rate=1e-5,2e-5")
        start = time.monotonic()

        def start_workers():
            # Not through a pipe: the workers it starts keep their inherited output open until the queue is done.
            with (repo.parent / "queue.log").open("a") as log:
                started = subprocess.Popen(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=dvc_env(), stdout=log,
                                           stderr=subprocess.STDOUT)
            assert started.wait(timeout=120) == 0, (repo.parent / "queue.log").read_text()

        start_workers()
        restarted = workers_lost_at_start(repo, 2)
        if restarted:
            start_workers()
        most_at_once, timeline, second = 0, [], 0
        try:
            deadline = start + 900
            while time.monotonic() < deadline:
                running = experiments_running(repo)
                most_at_once = max(most_at_once, running)
                # `dvc queue status` costs about a second of CPU, on the core the experiments share: asked when
                # none is running (not started yet, or done) and every tenth second, not every second.
                if running == 0 or second % 10 == 0:
                    text = sh(repo, "dvc", "queue", "status").stdout
                    states = queue_statuses(text)
                    timeline.append((round(time.monotonic() - start), running, states))
                    if len(states) >= 2 and not {"Queued", "Running"} & set(states):
                        break
                second += 1
                time.sleep(1)
            elapsed = time.monotonic() - start
        finally:
            sh(repo, "dvc", "queue", "stop", check=False)
            for _ in range(60):  # the workers are detached processes: wait until they have gone
                if re.search(r"Worker status: 0 active, 0 idle", sh(repo, "dvc", "queue", "status").stdout):
                    break
                time.sleep(0.5)
        names = re.findall(r"Queued experiment '([^']+)'", queued.stdout + queued.stderr)
        return {"repo": repo, "status": text, "elapsed": round(elapsed, 1), "names": names,
                "most_at_once": most_at_once, "timeline": timeline, "restarted_workers": restarted}
    return memo("queued_grid", lambda: once_per_session(tmp_path_factory, "queued_grid", build))
