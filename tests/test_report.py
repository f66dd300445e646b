"""The report stage end to end on a ten-prompt case small enough to check by hand."""
import json
from pathlib import Path

import pytest

from stages import report
from stages.lib.paths import CATEGORY_CSV, CATEGORY_PNG, MODELS, REPORT_MD, metrics_path, outcomes_path
from stages.lib.stats import wilson_interval

# Ten prompts, one instruction each; category x holds keys 0-5, category y keys 6-9.
# Strictly correct prompts per model (loose adds key 9 for every model):
#   base: 0 1             -> 2/10
#   sft:  0 1 2 3 4 5     -> 6/10   (vs base: b = 0, c = 4)
#   dpo:  0 1 2 3 4 5 6 7 8 -> 9/10 (vs sft: b = 0, c = 3; vs base: b = 0, c = 7)
STRICT_RIGHT = {"base": {0, 1}, "sft": set(range(6)), "dpo": set(range(9))}
OUTPUTS = [metrics_path("report"), REPORT_MD, CATEGORY_CSV, CATEGORY_PNG]


def _outcome(key: int, strict: bool, loose: bool) -> dict:
    return {
        "key": key,
        "category": "x" if key < 6 else "y",
        "prompt": f"prompt {key}",
        "response": "response",
        "instruction_id_list": ["punctuation:no_comma"],
        "strict": [strict],
        "loose": [loose],
        "prompt_strict": strict,
        "prompt_loose": loose,
    }


def _write_outcomes(model: str, keys, suite: str = "test", right: set | None = None) -> None:
    path = outcomes_path(model, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    right = STRICT_RIGHT[model] if right is None else right
    rows = [_outcome(k, k in right, k in right or k == 9) for k in keys]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("report: {seed: 0, bootstrap_samples: 200}\nevaluate: {suites: [test]}\n")
    for model in MODELS:
        _write_outcomes(model, range(10))
    return tmp_path


def test_report_numbers_on_a_hand_checked_case(workspace, capsys):
    report.main()
    data = json.loads(metrics_path("report").read_text())

    assert data["n_prompts"] == 10
    base_strict = data["models"]["base"]["overall"]["prompt_strict"]
    assert base_strict["accuracy"] == pytest.approx(0.2)
    assert (base_strict["ci_low"], base_strict["ci_high"]) == pytest.approx(wilson_interval(2, 10))
    assert data["models"]["dpo"]["overall"]["prompt_loose"]["accuracy"] == pytest.approx(1.0)

    sft_base = data["comparisons"]["sft_vs_base"]["prompt_strict"]["overall"]
    assert (sft_base["b"], sft_base["c"]) == (0, 4)
    assert sft_base["diff"] == pytest.approx(0.4)
    assert sft_base["p_value"] == pytest.approx(2 / 2**4)  # exact: all 4 discordant pairs favour sft
    assert sft_base["method"] == "exact"
    dpo_sft = data["comparisons"]["dpo_vs_sft"]["prompt_strict"]["overall"]
    assert (dpo_sft["b"], dpo_sft["c"], dpo_sft["p_value"]) == (0, 3, pytest.approx(2 / 2**3))
    dpo_base = data["comparisons"]["dpo_vs_base"]["prompt_strict"]["overall"]
    assert (dpo_base["b"], dpo_base["c"], dpo_base["p_value"]) == (0, 7, pytest.approx(2 / 2**7))

    # sft vs base by category: x has c = 4 (p 0.125), y has no discordant pair (p 1).
    # BH over [0.125, 1]: 0.125 * 2/1 = 0.25 and 1 * 2/2 = 1.
    by_cat = data["comparisons"]["sft_vs_base"]["prompt_strict"]["by_category"]
    assert by_cat["x"]["p_value"] == pytest.approx(0.125)
    assert by_cat["x"]["p_adjusted"] == pytest.approx(0.25)
    assert by_cat["y"]["p_adjusted"] == pytest.approx(1.0)
    # dpo vs base: x p 0.125, y (c = 3) p 0.25 -> both adjust to 0.25.
    by_cat = data["comparisons"]["dpo_vs_base"]["prompt_strict"]["by_category"]
    assert [by_cat[c]["p_adjusted"] for c in "xy"] == pytest.approx([0.25, 0.25])

    assert "sft vs base" in capsys.readouterr().out


def test_report_writes_readable_markdown_csv_and_png(workspace):
    report.main()
    markdown = REPORT_MD.read_text()
    for pair in ("sft vs base", "dpo vs sft", "dpo vs base"):
        assert pair in markdown
    assert "Benjamini" in markdown and "contains 0" in markdown

    csv_lines = CATEGORY_CSV.read_text().splitlines()
    assert csv_lines[0] == "category,model,accuracy"
    assert len(csv_lines) == 1 + 2 * 3
    assert "x,sft,1.0" in csv_lines

    png = CATEGORY_PNG.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_mismatched_prompt_keys_fail_without_output(workspace, capsys):
    _write_outcomes("dpo", range(9))  # dpo lost key 9
    stale = metrics_path("report")
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")  # left by an earlier run: must not survive a failed one

    with pytest.raises(SystemExit) as exc:
        report.main()

    assert exc.value.code == 2
    assert "different prompts" in capsys.readouterr().err
    assert not [p for p in OUTPUTS if p.exists()]


def test_every_suite_is_reported_with_the_test_suite_as_headline(workspace):
    """A second suite where nothing changes: its comparisons sit under suites.<name>, the headline stays test."""
    Path("params.yaml").write_text("report: {seed: 0, bootstrap_samples: 200}\n"
                                   "evaluate: {suites: [handwritten, test]}\n")
    for model in MODELS:
        _write_outcomes(model, range(10), suite="handwritten", right={0, 1, 2})
    report.main()
    data = json.loads(metrics_path("report").read_text())
    assert data["suite"] == "test" and data["comparisons"]["sft_vs_base"]["prompt_strict"]["overall"]["c"] == 4
    other = data["suites"]["handwritten"]["comparisons"]["sft_vs_base"]["prompt_strict"]["overall"]
    assert (other["b"], other["c"], other["diff"]) == (0, 0, 0.0)
    markdown = REPORT_MD.read_text()
    assert markdown.index("Suite `test`") < markdown.index("Suite `handwritten`")


def test_a_suite_missing_for_one_model_fails_naming_it(workspace, capsys):
    Path("params.yaml").write_text("report: {seed: 0, bootstrap_samples: 200}\n"
                                   "evaluate: {suites: [test, handwritten]}\n")
    for model in ("base", "sft"):
        _write_outcomes(model, range(10), suite="handwritten")
    with pytest.raises(SystemExit) as exc:
        report.main()
    assert exc.value.code == 2
    assert str(outcomes_path("dpo", "handwritten")) in capsys.readouterr().err
    assert not [p for p in OUTPUTS if p.exists()]
