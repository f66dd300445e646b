"""Faults, with the real dvc on the tiny pipeline: a kill during prepare_base, a full disk, two `dvc repro`
at once, and a `dvc push` killed halfway (a queued grid run two at a time is in test_dvc_workflow.py). Each ends with
nothing lost, a clear message, and a repo that the next ordinary command brings back to clean.

(A kill at each step of an atomic write, the renames included, is tests/test_io.py.)
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, dvc_env, run_stage, sh, write_params
from dvc_repos import (
    cache_files, commit_all, copy_repo, outputs_digest, read_lock,
    say, set_param, snapshot, status,
)

from stages.lib.paths import BASE_MODEL, METRICS_DIR, metrics_path

pytestmark = pytest.mark.slow  # the real dvc, kills and a full disk

LEFTOVER = re.compile(r"(^|/)\.[^/]+\.(tmp|old)(/|$)")


def _dvc(repo: Path, *args: str, log: Path) -> subprocess.Popen:
    # Its own session, so that a signal to the group reaches dvc and its stage, never the test runner.
    with log.open("w") as fh:
        return subprocess.Popen(["dvc", *args], cwd=repo, env=dvc_env(), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


# --- a kill during prepare_base ----------------------------------------------------------------------

def test_a_kill_during_prepare_base_loses_nothing(work_repo, tmp_path, capsys):
    """SIGKILL to `dvc repro -f prepare_base` (dvc and the stage) once the stage has made the temporary folder
    it writes the model into. dvc.lock is untouched and `dvc status` reports prepare_base; the half-written folder is
    hidden from git; `dvc checkout` brings models/base back from the cache; the next run of the stage
    removes the leftover, says so, and reproduces the same models/base."""
    repo = work_repo
    lock_text, original = (repo / "dvc.lock").read_text(), snapshot(repo)
    proc = _dvc(repo, "repro", "-f", "prepare_base", log=tmp_path / "kill.log")
    deadline = time.monotonic() + 300
    try:
        while not list((repo / BASE_MODEL.parent).glob(".base.*.tmp")):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "kill.log").read_text()[-2000:]
            time.sleep(0.005)
    finally:
        _kill_group(proc)
    leftovers = list((repo / BASE_MODEL.parent).glob(".base.*.tmp"))
    assert leftovers, "the kill came after the write: nothing to check"
    assert (repo / "dvc.lock").read_text() == lock_text
    assert "prepare_base" in status(repo)
    assert not (repo / BASE_MODEL).exists()  # dvc removed it before running the stage
    # git sees only the metrics file dvc removed with the stage's outputs; the leftover is ignored, not a change
    assert sh(repo, "git", "status", "--porcelain").stdout.split() == ["D", metrics_path("prepare_base").as_posix()]
    assert sh(repo, "git", "check-ignore", "-q", (BASE_MODEL.parent / leftovers[0].name).as_posix(),
              check=False).returncode == 0

    sh(repo, "git", "checkout", "--", METRICS_DIR.as_posix())
    sh(repo, "dvc", "checkout", BASE_MODEL.as_posix())
    assert {p: h for p, h in snapshot(repo).items() if not LEFTOVER.search(p)} == original
    assert status(repo) == {}

    rerun = sh(repo, "dvc", "repro", "-f", "prepare_base")
    assert re.search(r"removed .*models/\.base\.[^ ]+\.tmp, left by an interrupted write of models/base",
                     rerun.stdout + rerun.stderr), rerun.stderr[-2000:]
    # the same models/base, no leftover; only the run's timings (metrics/prepare_base.json, and its hash in
    # dvc.lock) are new
    timings = {metrics_path("prepare_base").as_posix(), "dvc.lock"}
    assert {p: h for p, h in snapshot(repo).items() if p not in timings} == \
        {p: h for p, h in original.items() if p not in timings}
    def base_out(lock: dict) -> list[dict]:
        return [o for o in lock["prepare_base"]["outs"] if o["path"] == BASE_MODEL.as_posix()]
    assert base_out(read_lock(repo)) == base_out(yaml.safe_load(lock_text)["stages"])
    assert status(repo) == {}
    say(capsys, f"killed prepare_base left {leftovers[0].name}; the rerun removed it")


# --- a full disk ----------------------------------------------------------------------------------------

def _mount_tmpfs(where: Path, size_kb: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# Where a small filesystem cannot be mounted (not root, or a container without CAP_SYS_ADMIN): the same
# stage, with every file it opens for writing under models/ failing as a full disk fails.
SIMULATED_FULL_DISK = textwrap.dedent("""
    import errno, os, runpy, sys
    full = os.path.abspath("models")

    def hook(event, args):
        if event == "open" and isinstance(args[0], str) and os.path.abspath(args[0]).startswith(full):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), args[0])

    sys.addaudithook(hook)
    sys.argv = ["prepare_base"]
    runpy.run_module("stages.prepare_base", run_name="__main__")
""")


def test_a_full_disk_is_one_clear_error_with_nothing_left(tiny_pipeline, tiny_hf_dir, tmp_path, capsys):
    """prepare_base writing the model onto a filesystem without room for it (a tmpfs smaller than the
    model, when this test may mount one; else a simulated ENOSPC): exit 2 with one line that says the
    device is full, no models/base, no temporary files, and the space given back."""
    needed = sum(p.stat().st_size for p in (tiny_pipeline / BASE_MODEL).rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, size_kb=max(64, needed // 2048))
    try:
        project = disk / "project"
        project.mkdir()
        write_params(project, model={"name_or_path": str(tiny_hf_dir), "dtype": "float32"})
        free_before = os.statvfs(disk).f_bavail
        if mounted:
            result = run_stage("prepare_base", project)
        else:
            result = subprocess.run([sys.executable, "-c", SIMULATED_FULL_DISK], cwd=project,
                                    env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                                    timeout=600)
        assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
        assert "error: no space left on the device" in result.stderr
        assert "Traceback" not in result.stderr
        left = sorted(p.relative_to(project).as_posix() for p in project.rglob("*"))
        assert [p for p in left if p.startswith("models/") or LEFTOVER.search(p)] == [], left
        assert os.statvfs(disk).f_bavail == free_before
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True, timeout=60)
    say(capsys, f"full disk ({'tmpfs of ' + str(max(64, needed // 2048)) + ' KiB' if mounted else 'simulated'}): "
                f"{result.stderr.strip().splitlines()[-1]}")


# --- two `dvc repro` at once ---------------------------------------------------------------------------

def test_two_repros_at_once(work_repo, tmp_path, capsys):
    """A second `dvc repro` while the first is training: DVC refuses it at once, naming the busy output and
    the process holding it; the first completes; nothing is half written and the pipeline ends clean."""
    repo = work_repo
    set_param(repo, "train_dpo.max_steps", 20)  # the last training stage: the shortest rerun
    commit_all(repo, "a longer DPO run")
    first = _dvc(repo, "repro", log=tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 300
        while "Running stage 'train_dpo'" not in (tmp_path / "first.log").read_text():
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-2000:]
            time.sleep(0.2)
        second = sh(repo, "dvc", "repro", check=False, timeout=300)
        assert first.poll() is None, "the first repro ended before the second was tried"
        first.wait(timeout=900)
    finally:
        if first.poll() is None:
            _kill_group(first)
    message = second.stdout + second.stderr
    assert second.returncode != 0
    assert re.search(r"ERROR: failed to reproduce '[^']+': '[^']+' is busy, it is being blocked by:", message), message
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert status(repo) == {}
    assert [p for p in snapshot(repo) if LEFTOVER.search(p)] == []
    say(capsys, f"second repro: {message.strip().splitlines()[0][:160]}")


# --- `dvc push` killed halfway --------------------------------------------------------------------------

# `dvc push` in this process, killed (SIGKILL) just before it renames its n-th uploaded file into place.
KILLED_PUSH = textwrap.dedent("""
    import os, signal, sys
    remote, stop_at = sys.argv[1], int(sys.argv[2])
    renames = 0

    def hook(event, args):
        global renames
        if event == "os.rename" and str(args[1]).startswith(remote):
            renames += 1
            if renames == stop_at:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    from dvc.cli import main
    sys.exit(main(["push"]))
""")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_an_interrupted_push_completes_on_the_next_push(reproduced, tmp_path, capsys):
    """`dvc push` to a local remote, SIGKILLed halfway (before its 5th upload is renamed into place). Every
    object that reached the remote is whole (its content hashes to its name); `dvc status -c` lists what is
    missing; the next `dvc push` sends the rest; a fresh clone pulls every output back identical."""
    repo = copy_repo(reproduced.repo, tmp_path / "repo")
    remote = tmp_path / "remote"
    sh(repo, "dvc", "remote", "add", "-d", "store", str(remote))
    commit_all(repo, "remote")
    killed = subprocess.run([sys.executable, "-c", KILLED_PUSH, str(remote), "5"], cwd=repo, env=dvc_env(),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    objects = [p for p in remote.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert 0 < len(objects) < len(cache_files(repo))
    for obj in objects:  # content-addressed: files/md5/ab/cdef... holds content whose md5 is abcdef...
        assert _md5(obj) == obj.parent.name + obj.name.removesuffix(".dir"), obj
    missing = sh(repo, "dvc", "status", "-c")
    assert "new:" in missing.stdout, missing.stdout

    pushed = sh(repo, "dvc", "push")
    assert re.search(r"\d+ files? pushed", pushed.stdout), pushed.stdout
    assert "are in sync" in sh(repo, "dvc", "status", "-c").stdout

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, "dvc", "pull")
    assert outputs_digest(clone) == outputs_digest(repo)
    assert status(clone) == {}
    say(capsys, f"push killed after 4 uploads ({len(objects)} objects whole on the remote); the next push: "
                f"{pushed.stdout.strip().splitlines()[-1]}")
