"""Atomic writes: flushed to disk before the rename, whole at every instant a kill can strike, and the
temporary siblings a killed write leaves are swept by the next stage and ignored by git and DVC."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, sh

from stages.lib import io
from stages.lib.paths import BASE_MODEL, curves_dir, stage_files

# A writer in its own process that SIGKILLs itself just before the n-th file-system operation of the write
# (Python's audit hooks see each one before it happens), or runs to the end when n is past the last.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[4])
    from stages.lib import io

    stop_at, kind, root = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    seen = 0
    EVENTS = {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "shutil.rmtree",
              "tempfile.mkstemp", "tempfile.mkdtemp", "ctypes.dlopen", "ctypes.dlsym"}

    def hook(event, args):
        global seen
        if event in EVENTS:
            seen += 1
            if seen == stop_at:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    if kind == "dir":
        with io.atomic_dir(root / "out") as tmp:
            (tmp / "weights.bin").write_bytes(b"new" * 50_000)
            (tmp / "config.json").write_text("new")
    else:
        io.write_text_atomic(root / "out.json", "new" * 50_000)
    print("finished")
""")


def _old_version(root: Path, kind: str) -> None:
    if kind == "dir":
        (root / "out").mkdir()
        (root / "out/weights.bin").write_bytes(b"old" * 50_000)
        (root / "out/config.json").write_text("old")
    else:
        (root / "out.json").write_text("old" * 50_000)


def _version(root: Path, kind: str) -> str:
    if kind == "dir":
        out = root / "out"
        if not out.is_dir():
            return "missing"
        files = {p.name: p.read_bytes() for p in out.iterdir()}
        for tag in ("old", "new"):
            if files == {"weights.bin": tag.encode() * 50_000, "config.json": tag.encode()}:
                return tag
        return f"mixed: {sorted(files)}"
    out = root / "out.json"
    if not out.is_file():
        return "missing"
    text = out.read_text()
    return next((tag for tag in ("old", "new") if text == tag * 50_000), "mixed")


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_kill_at_any_step_of_an_atomic_write_leaves_the_old_or_the_new_version(kind, tmp_path):
    """Replacing an existing output, killed before each file-system step in turn (the renames included):
    afterwards the output is always there, whole, old or new; the next stage's sweep removes whatever
    temporary sibling the kill left, and nothing else."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    outcomes = []
    for stop_at in range(1, 200):
        root = tmp_path / f"run{stop_at}"
        root.mkdir()
        _old_version(root, kind)
        (root / "unrelated.txt").write_text("keep")
        run = subprocess.run([sys.executable, str(script), str(stop_at), kind, str(root), str(ROOT)],
                             capture_output=True, text=True, timeout=60)
        version = _version(root, kind)
        outcomes.append(version)
        assert version in ("old", "new"), f"killed before step {stop_at}: output {version}"
        target = root / ("out" if kind == "dir" else "out.json")
        io.sweep_leftovers(target)
        assert sorted(p.name for p in root.iterdir()) == sorted(["unrelated.txt", target.name])
        if run.returncode == 0:
            assert "finished" in run.stdout and version == "new"
            break
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    else:
        pytest.fail("the write never finished")
    assert "old" in outcomes and outcomes[-1] == "new"


def test_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    """fsync of the file (and, for a folder, of everything in it) before the rename, then of the parent
    folder after it: a power cut cannot leave a renamed but empty output."""
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        log.append(("rename", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)

    io.write_text_atomic(tmp_path / "a.json", "{}")
    renamed = next(i for i, e in enumerate(log) if e[0] == "rename")
    tmp_name = log[renamed][1]
    assert ("fsync", tmp_name) in log[:renamed]
    assert ("fsync", str(tmp_path)) in log[renamed + 1:]

    log.clear()
    with io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub/w.bin").write_bytes(b"x")
    renamed = next(i for i, e in enumerate(log) if e[0] == "rename")
    synced = {e[1] for e in log[:renamed]}
    assert {str(tmp / "sub/w.bin"), str(tmp / "sub"), str(tmp)} <= synced
    assert ("fsync", str(tmp_path)) in log[renamed + 1:]


def test_remove_outputs_sweeps_only_this_outputs_leftovers(tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / ".base.k2j3.tmp").mkdir()
    (tmp_path / ".base.k2j3.tmp/model.safetensors").write_bytes(b"partial")
    (tmp_path / ".base.x9.old").mkdir()
    (tmp_path / ".sft.a1.tmp").mkdir()  # another output's: not ours to touch
    (tmp_path / "base.tmp").write_text("not a temp sibling of ours")
    io.remove_outputs(tmp_path / "base")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sft.a1.tmp", "base.tmp"]
    err = capsys.readouterr().err
    assert ".base.k2j3.tmp, left by an interrupted write" in err and ".base.x9.old" in err


def test_leftover_patterns_are_ignored_by_git_and_dvc(tmp_path):
    """A kill leaves hidden .tmp/.old siblings (for models/base, a copy of the weights): never committed,
    never hashed into an output."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in (".gitignore", ".dvcignore"):
        (repo / name).write_text((ROOT / name).read_text())
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    for path in ("models/.base.a8f2k.tmp/model.safetensors", "metrics/.train_sft.json.x1.tmp", "models/.sft.q.old/x"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("leftover")
        assert sh(repo, "git", "check-ignore", "-q", path, check=False).returncode == 0, path
        assert sh(repo, "dvc", "check-ignore", "-q", path, check=False).returncode == 0, path
    (repo / BASE_MODEL).mkdir()
    assert sh(repo, "git", "check-ignore", "-q", (BASE_MODEL / "x.tmp").as_posix(), check=False).returncode == 1


def test_training_stages_clear_only_their_declared_plots_output():
    """The training stages delete their DVCLive plots folder before a run: it must be exactly the plots
    output dvc.yaml declares, not the DVCLive folder that holds it (and whatever else a user keeps there)."""
    from stages import train_dpo, train_sft

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for module, name in ((train_sft, "train_sft"), (train_dpo, "train_dpo")):
        declared = [next(iter(p)) if isinstance(p, dict) else p for p in stages[name]["plots"]]
        assert declared == [curves_dir(name).as_posix()]
        assert module.LIVE == stage_files(name) != curves_dir(name)  # DVCLive's folder holds more than the curves
