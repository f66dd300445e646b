"""`dvc plots show` renders with no network: tools/offline_plots_template.py inlines vega, vega-lite and
vega-embed (from the pinned PyPI package vl-convert-python) into DVC's `plots.html_template`, and a
headless Chromium, with every network request sent to a closed loopback port, draws the training
curves and the per-category accuracy chart.
"""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, sh
from dvc_repos import copy_repo

from stages.lib.paths import CATEGORY_CSV, MODELS, curves_dir

pytestmark = pytest.mark.slow  # the real dvc and headless Chromium

TOOL = ROOT / "tools" / "offline_plots_template.py"
CHROMIUM = "/usr/bin/chromium"  # Debian's package; `make test` installs it
CURVES = tuple((curves_dir(stage) / "loss.tsv").as_posix() for stage in ("train_sft", "train_dpo"))
ACCURACY = CATEGORY_CSV.as_posix()


@pytest.fixture(scope="module")
def offline_repo(reproduced, tmp_path_factory) -> dict:
    """A copy of the reproduced repo whose .dvc/config.local points at a freshly built offline template."""
    work = tmp_path_factory.mktemp("plots")
    repo = copy_repo(reproduced.repo, work / "repo")
    template = work / "template" / "offline.html"
    subprocess.run([sys.executable, str(TOOL), "--output", str(template), "--configure", "--repo", str(repo)],
                   check=True, capture_output=True, text=True, cwd=repo)
    return {"repo": repo, "template": template, "work": work}


def chromium(*args: str, profile: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """Headless Chromium that cannot reach anything: all requests go to a closed loopback port."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
             "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


def test_template_carries_the_libraries(offline_repo):
    html = offline_repo["template"].read_text()
    assert "{plot_divs}" in html and "{scripts}" not in html  # so DVC never adds its CDN <script> tags
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert "window.vegaEmbed" in html and "window.vegaLite" in html
    config = (offline_repo["repo"] / ".dvc" / "config.local").read_text()
    assert "html_template" in config and str(offline_repo["template"]) in config
    assert ".dvc/config.local" not in sh(offline_repo["repo"], "git", "ls-files").stdout


def _plot_div(dom: str, plot_id: str) -> str:
    start = dom.find(f'id="{plot_id}"')
    assert start >= 0, f"no element for {plot_id}"
    end = dom.find('<div id="', start + 1)
    return dom[start:end if end > 0 else None]


def test_plots_render_offline_in_chromium(offline_repo):
    repo, work = offline_repo["repo"], offline_repo["work"]
    sh(repo, "dvc", "plots", "show", "-o", str(work / "all"))
    page = (work / "all" / "index.html").read_text()
    assert not re.search(r"""<(script|link|img|iframe)[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", page, re.I), \
        "the page loads something from the network"
    assert "cdn.jsdelivr" not in page
    n_vega = len(re.findall(r"vegaEmbed\('#", page))
    assert n_vega >= 3

    dom = chromium("--dump-dom", (work / "all" / "index.html").as_uri(), profile=work / "profile").stdout
    drawn = re.findall(r'class="vega-embed[^"]*"><div class="chart-wrapper"[^>]*><svg[^>]*class="marks"', dom)
    assert len(drawn) == n_vega, f"{len(drawn)} of {n_vega} plots drawn"

    for target in CURVES:
        div = _plot_div(dom, re.sub(r"[^A-Za-z0-9]", "_", target))
        line = re.search(r'aria-roledescription="line mark" d="M[-\d.,]+L[-\d.,L]+"', div)
        assert line, f"{target}: no line drawn"
    with (repo / ACCURACY).open() as fh:
        rows = list(csv.DictReader(fh))
    div = _plot_div(dom, re.sub(r"[^A-Za-z0-9]", "_", ACCURACY))
    bars = re.findall(r'aria-roledescription="bar" d="M[^"]+"', div)
    assert len(bars) == len(rows) > 0, f"{len(bars)} bars for {len(rows)} rows"
    assert {r["model"] for r in rows} == set(MODELS)


def test_screenshot_is_not_blank(offline_repo):
    """The curves and the accuracy chart as a person sees them: colored marks on the page."""
    import numpy as np
    from PIL import Image

    repo, work = offline_repo["repo"], offline_repo["work"]
    sh(repo, "dvc", "plots", "show", "-o", str(work / "three"), *CURVES, ACCURACY)
    shot = work / "plots.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1000", (work / "three" / "index.html").as_uri(),
             profile=work / "profile-shot")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16).reshape(-1, 3)
    colored = int(((pixels.max(axis=1) - pixels.min(axis=1)) > 60).sum())
    not_white = int((pixels != 255).any(axis=1).sum())
    assert not_white > 0.02 * len(pixels), "the page is blank"
    assert colored > 2000, f"only {colored} colored pixels: no curve or bar was drawn"
