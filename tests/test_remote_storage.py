"""Remote storage round trips with the real dvc: `dvc push`, a fresh `git clone`, `dvc pull`, and every
output back with identical content and a clean `dvc status`; against a local directory remote and a
real S3 API (moto's server on loopback, through dvc-s3). Then an experiment carried through a bare git
remote with `dvc exp push` / `dvc exp pull`. Credentials live in .dvc/config.local, never in git.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from conftest import sh
from dvc_repos import (
    commit_all, copy_repo, outputs_digest, queued_grid, say, status,
)

from stages.lib.paths import SFT_ADAPTER

pytestmark = pytest.mark.slow  # pushes and pulls with the real dvc

KEY_ID, SECRET = "AKIAFAKEFORTESTS0001", "fake-secret-for-a-loopback-s3-0001"


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server in a thread on a free loopback port, with an empty bucket; stopped afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    client.create_bucket(Bucket="pipeline-store")
    yield {"url": url, "client": client, "bucket": "pipeline-store"}
    server.stop()


def _no_cloud_metadata(monkeypatch):
    # Credentials come from .dvc/config.local; never let botocore look anywhere else.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _configure(repo: Path, kind: str, where) -> None:
    if kind == "local":
        sh(repo, "dvc", "remote", "add", "-d", "store", str(where))
    else:
        sh(repo, "dvc", "remote", "add", "-d", "store", f"s3://{where['bucket']}/pipeline")
        sh(repo, "dvc", "remote", "modify", "store", "endpointurl", where["url"])
        sh(repo, "dvc", "remote", "modify", "store", "region", "us-east-1")
        _credentials(repo)


def _credentials(repo: Path) -> None:
    sh(repo, "dvc", "remote", "modify", "--local", "store", "access_key_id", KEY_ID)
    sh(repo, "dvc", "remote", "modify", "--local", "store", "secret_access_key", SECRET)


def _remote_bytes(kind: str, where) -> tuple[int, int]:
    if kind == "local":
        files = [p for p in Path(where).rglob("*") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)
    pages = where["client"].get_paginator("list_objects_v2").paginate(Bucket=where["bucket"], Prefix="pipeline/")
    objects = [o for page in pages for o in page.get("Contents", [])]
    return len(objects), sum(o["Size"] for o in objects)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_push_clone_pull_restores_every_output(kind, reproduced, s3_endpoint, tmp_path, monkeypatch, capsys):
    _no_cloud_metadata(monkeypatch)
    repo = copy_repo(reproduced.repo, tmp_path / "repo")
    where = tmp_path / "remote" if kind == "local" else s3_endpoint
    _configure(repo, kind, where)
    commit_all(repo, f"a {kind} remote")

    tracked = sh(repo, "git", "ls-files").stdout.split()
    assert ".dvc/config.local" not in tracked
    assert SECRET not in sh(repo, "git", "show", "HEAD:.dvc/config").stdout

    start = time.monotonic()
    pushed = sh(repo, "dvc", "push")
    push_s = time.monotonic() - start
    n_objects, n_bytes = _remote_bytes(kind, where)
    # The local cache may also hold objects of earlier runs that HEAD no longer names; push sends only what
    # dvc.lock names, so the check is that the remote is complete for it, then a fresh clone's pull.
    assert n_objects > 0, pushed.stdout
    assert status(repo, "--cloud") == {}

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / SFT_ADAPTER).exists()
    if kind == "s3":
        _credentials(clone)  # a fresh clone has none: they were never in git
    start = time.monotonic()
    sh(clone, "dvc", "pull")
    pull_s = time.monotonic() - start

    assert outputs_digest(clone) == outputs_digest(repo)
    assert "MISSING" not in outputs_digest(clone).values()
    assert status(clone) == {}
    say(capsys, f"{kind} remote: pushed {n_objects} objects, {n_bytes / 1024:.0f} KiB in {push_s:.1f} s; "
                f"pulled into a fresh clone in {pull_s:.1f} s")


def test_exp_push_and_pull_carry_an_experiment(tiny_hf_dir, tmp_path_factory, reproduced, tmp_path):
    """An experiment from the queued grid goes to a bare git remote with `dvc exp push`, artifacts to the
    DVC remote; a fresh clone gets it back with `dvc exp pull`, and `dvc exp apply` restores its outputs."""
    grid = queued_grid(tmp_path_factory, reproduced)
    repo = copy_repo(grid["repo"], tmp_path / "repo")
    name = grid["names"][0]
    bare = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(bare))
    sh(repo, "git", "remote", "add", "origin", str(bare))
    # The DVC remote goes in .dvc/config.local, so HEAD stays the experiments' baseline.
    sh(repo, "dvc", "remote", "add", "--local", "-d", "store", str(tmp_path / "dvc-store"))
    branch = sh(repo, "git", "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    sh(repo, "git", "push", "-q", "origin", branch)

    pushed = sh(repo, "dvc", "exp", "push", "origin", name)
    assert name in sh(repo, "dvc", "exp", "list", "origin").stdout, pushed.stdout + pushed.stderr
    assert not (tmp_path / "clone").exists()

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", "-b", branch, str(bare), str(clone))
    sh(clone, "dvc", "remote", "add", "--local", "-d", "store", str(tmp_path / "dvc-store"))
    assert name not in sh(clone, "dvc", "exp", "list").stdout
    sh(clone, "dvc", "exp", "pull", "origin", name)
    assert name in sh(clone, "dvc", "exp", "list").stdout
    sh(clone, "dvc", "exp", "apply", name)
    assert status(clone) == {}

    sh(repo, "dvc", "exp", "apply", name)
    assert outputs_digest(clone) == outputs_digest(repo)
    assert (clone / "params.yaml").read_text() == (repo / "params.yaml").read_text()
