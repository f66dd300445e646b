"""End to end on the tiny model with the real dvc in a temporary git repo: repro, two experiments,
and `dvc metrics diff` comparing DPO-only against SFT->DPO."""
import pytest
from conftest import sh, stages_run
from dvc_repos import ALL_STAGES, copy_repo, evaluations

from stages.lib.paths import eval_metrics_path, metrics_path

pytestmark = pytest.mark.slow  # the real dvc repro and two experiments


def test_repro_then_sft_dpo_vs_dpo_only(reproduced, tmp_path):
    # The session's one full `dvc repro` of a fresh repo (shared with the other tests, which read copies)
    assert set(reproduced.first_run) == set(ALL_STAGES)
    repo = copy_repo(reproduced.repo, tmp_path / "repo")
    assert stages_run(sh(repo, "dvc", "repro").stdout) == []  # nothing changed, nothing reruns

    sh(repo, "dvc", "exp", "run", "-n", "sft-dpo")
    dpo_only = sh(repo, "dvc", "exp", "run", "-n", "dpo-only", "-S", "train_dpo.init=base")
    ran = set(stages_run(dpo_only.stdout))
    # report reruns unless the new DPO model happens to answer every prompt as the old one did
    assert {"train_dpo"} | evaluations("dpo") <= ran <= {"train_dpo", "report"} | evaluations("dpo")
    assert not ran & {"generate_sft", "train_sft", "build_prefs"}

    diff = sh(repo, "dvc", "metrics", "diff", "sft-dpo", "dpo-only", "--all", "--md").stdout
    rows = [line for line in diff.splitlines()
            if line.startswith(f"| {metrics_path('train_dpo')}") and "| init " in line]
    assert rows and "sft" in rows[0] and "base" in rows[0], diff
    dpo_eval = [line for line in diff.splitlines()
                if line.startswith(f"| {eval_metrics_path('dpo', 'test')}")
                and "overall.prompt_strict.accuracy" in line]
    assert dpo_eval, diff
    cells = [c.strip() for c in dpo_eval[0].strip("|").split("|")]
    old, new = cells[2], cells[3]
    assert old not in ("", "-") and new not in ("", "-"), dpo_eval[0]
