"""The ``report`` stage: how accurate base, SFT and DPO are, and whether the differences are real.

For every suite in ``evaluate.suites`` reads ``data/eval/<model>-<suite>.jsonl`` of the three models, checks
they evaluated the same prompts, and compares each pair on the same prompts (paired bootstrap interval,
McNemar's test, Cohen's h), overall and per category with Benjamini-Hochberg adjusted p-values. Writes
``metrics/report.json`` (every number: the headline suite, ``test``, at the top level, every other suite
under ``suites``), ``metrics/report.md`` (the tables a person reads) and
``metrics/report/category_accuracy.{csv,png}`` (the headline suite). Stale outputs are removed first; inputs
are then fully checked and every output rendered in memory before the first file is written, so bad
inputs leave no outputs at all.

Run as ``python -m stages.report``.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict

from stages.lib.errors import UserError, stage_main
from stages.lib.eval_metrics import PROMPT_MEASURES, align_outcomes, summarize
from stages.lib.io import remove_outputs, write_bytes_atomic, write_json_atomic, write_text_atomic
from stages.lib.params import ReportParams, load_params
from stages.lib.paths import CATEGORY_CSV, CATEGORY_PNG, MODELS, REPORT_MD, metrics_path, outcomes_path
from stages.lib.records import EvalOutcome, read_jsonl
from stages.lib.stats import benjamini_hochberg, paired_comparison

# Each pair is (B, A), read "B vs A": a positive diff means B beats A.
PAIRS = (("sft", "base"), ("dpo", "sft"), ("dpo", "base"))

OUT_JSON = metrics_path("report")


HEADLINE_SUITE = "test"  # the suite nothing is tuned on; the others are reported beside it


def headline(suites: list[str]) -> str:
    return HEADLINE_SUITE if HEADLINE_SUITE in suites else suites[0]


def compare_runs(a_run: list[EvalOutcome], b_run: list[EvalOutcome], settings: ReportParams) -> dict:
    """Paired comparison of B against A per prompt-level measure, overall and per category.

    The runs must be aligned (same prompt at each position). Per-category p-values get a
    ``p_adjusted`` (Benjamini-Hochberg across the categories of that measure), because testing
    many categories at once would otherwise turn up chance "wins".
    """
    positions: dict[str, list[int]] = defaultdict(list)
    for i, outcome in enumerate(a_run):
        positions[outcome.category].append(i)

    def compare(a: list[bool], b: list[bool]) -> dict:
        return paired_comparison(a, b, settings.bootstrap_samples, settings.seed, 1.0 - settings.alpha)

    result = {}
    for measure in PROMPT_MEASURES:
        a = [getattr(o, measure) for o in a_run]
        b = [getattr(o, measure) for o in b_run]
        by_category = {
            cat: compare([a[i] for i in idx], [b[i] for i in idx]) for cat, idx in sorted(positions.items())
        }
        adjusted = benjamini_hochberg([entry["p_value"] for entry in by_category.values()])
        for entry, p_adj in zip(by_category.values(), adjusted):
            entry["p_adjusted"] = p_adj
        result[measure] = {"overall": compare(a, b), "by_category": by_category}
    return result


def build_report(runs: dict[str, list[EvalOutcome]], settings: ReportParams) -> dict:
    """All numbers of the report; raises UserError if the runs are not comparable."""
    keys, aligned = align_outcomes(runs)
    confidence = 1.0 - settings.alpha
    models = {}
    for model in MODELS:
        summary = summarize(aligned[model], confidence)
        models[model] = {"overall": summary["overall"], "by_category": summary["by_category"]}
    comparisons = {
        f"{b}_vs_{a}": {"model_a": a, "model_b": b, **compare_runs(aligned[a], aligned[b], settings)}
        for b, a in PAIRS
    }
    return {
        "n_prompts": len(keys),
        "confidence": confidence,
        "alpha": settings.alpha,
        "bootstrap_samples": settings.bootstrap_samples,
        "seed": settings.seed,
        "models": models,
        "comparisons": comparisons,
    }


# ---- rendering -------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _acc_cell(entry: dict) -> str:
    return f"{_pct(entry['accuracy'])} [{100 * entry['ci_low']:.1f}, {100 * entry['ci_high']:.1f}]"


def _diff_cell(cmp: dict) -> str:
    return f"{_pp(cmp['diff'])} [{_pp(cmp['ci_low'])}, {_pp(cmp['ci_high'])}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _model_rows(models: dict) -> list[list[str]]:
    return [
        [m, _acc_cell(models[m]["overall"]["prompt_strict"]), _acc_cell(models[m]["overall"]["prompt_loose"])]
        for m in MODELS
    ]


def _comparison_rows(comparisons: dict) -> list[list[str]]:
    rows = []
    for c in comparisons.values():
        for measure in PROMPT_MEASURES:
            o = c[measure]["overall"]
            rows.append([
                f"{c['model_b']} vs {c['model_a']}", measure.removeprefix("prompt_"),
                _pct(o["acc_a"]), _pct(o["acc_b"]), _diff_cell(o), f"{o['b']} / {o['c']}",
                _p(o["p_value"]), o["method"], f"{o['cohens_h']:+.2f}",
            ])
    return rows


def _category_comparison_rows(comparisons: dict) -> list[list[str]]:
    rows = []
    for c in comparisons.values():
        for cat, strict in c["prompt_strict"]["by_category"].items():
            loose = c["prompt_loose"]["by_category"][cat]
            rows.append([
                f"{c['model_b']} vs {c['model_a']}", cat, str(strict["n"]),
                _diff_cell(strict), _p(strict["p_adjusted"]), _diff_cell(loose), _p(loose["p_adjusted"]),
            ])
    return rows


def _suite_section(name: str, suite: dict, level: str, note: str) -> list[str]:
    return [
        f"## Suite `{name}`: {suite['n_prompts']} prompts{note}",
        "",
        f"### Prompt-level accuracy ({level} Wilson intervals)",
        "",
        *_table(["model", "strict", "loose"], _model_rows(suite["models"])),
        "",
        "### Comparisons (B vs A)",
        "",
        *_table(
            ["B vs A", "measure", "A", "B", f"diff pp [{level} CI]", "b / c", "McNemar p", "test", "h"],
            _comparison_rows(suite["comparisons"]),
        ),
        "",
        "### By category (p adjusted with Benjamini–Hochberg across categories)",
        "",
        *_table(
            ["B vs A", "category", "n", "strict diff pp [CI]", "strict p (BH)", "loose diff pp [CI]", "loose p (BH)"],
            _category_comparison_rows(suite["comparisons"]),
        ),
        "",
    ]


SUITE_NOTES = {
    "test": " (held out, composed like the training prompts; nothing is tuned on it)",
    "handwritten": " (held out, written by hand in other words than the training templates)",
    "dev": " (held out; defaults are chosen on it, so it flatters them)",
}


def render_markdown(report: dict) -> str:
    """Per suite, headline first: model accuracy, the pairwise comparisons, the per-category comparisons."""
    level = f"{100 * report['confidence']:g}%"
    lines = [
        "# Instruction-following report: base, SFT, DPO",
        "",
        f"{level} intervals · paired bootstrap with {report['bootstrap_samples']} resamples (seed {report['seed']})",
        "",
        "**How to read:** diff = accuracy(B) − accuracy(A) in percentage points; an interval that "
        f"contains 0 (or p ≥ {report['alpha']:g}) means no detectable difference on these prompts. "
        "b = prompts only A got right, c = prompts only B got right; "
        "h = Cohen's h (|h| ≈ 0.2 small, 0.5 medium, 0.8 large).",
        "",
    ]
    for name, suite in all_suites(report).items():
        lines += _suite_section(name, suite, level, SUITE_NOTES.get(name, ""))
    return "\n".join(lines)


def all_suites(report: dict) -> dict[str, dict]:
    """Every suite's results, the headline first (it sits at the report's top level)."""
    top = {k: report[k] for k in ("n_prompts", "models", "comparisons")}
    return {report["suite"]: top, **report.get("suites", {})}


def category_rows(report: dict) -> list[dict]:
    """Prompt-level strict accuracy per (category, model): the data behind the bar chart."""
    models = report["models"]
    categories = list(models[MODELS[0]]["by_category"])
    return [
        {"category": cat, "model": m, **models[m]["by_category"][cat]["prompt_strict"]}
        for cat in categories
        for m in MODELS
    ]


def render_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["category", "model", "accuracy"], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def render_png(rows: list[dict], confidence: float) -> bytes:
    """Grouped bars (one group per category, one bar per model) with Wilson error bars.

    Uses the Agg canvas directly, so it renders without a display and without touching
    pyplot's global state. matplotlib is imported here so that importing this module (as
    ``stages.compare`` does) stays cheap.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    categories = list(dict.fromkeys(r["category"] for r in rows))
    level = f"{100 * confidence:g}%"
    width = 0.8 / len(MODELS)
    fig = Figure(figsize=(max(6.0, 1.2 * len(categories) + 2), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j, model in enumerate(MODELS):
        mine = [r for r in rows if r["model"] == model]
        heights = [r["accuracy"] for r in mine]
        errors = [[r["accuracy"] - r["ci_low"] for r in mine], [r["ci_high"] - r["accuracy"] for r in mine]]
        xs = [i + (j - (len(MODELS) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=model)
    ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("prompt-level strict accuracy")
    ax.set_title(f"Accuracy by category (error bars: {level} Wilson intervals)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def print_summary(report: dict) -> None:
    print(f"report -> {REPORT_MD}")
    for name, suite in all_suites(report).items():
        strict = {m: suite["models"][m]["overall"]["prompt_strict"]["accuracy"] for m in MODELS}
        print(f"  {name} ({suite['n_prompts']} prompts), prompt strict: "
              + "  ".join(f"{m} {_pct(acc)}" for m, acc in strict.items()))
        for c in suite["comparisons"].values():
            o = c["prompt_strict"]["overall"]
            print(f"    {c['model_b']} vs {c['model_a']}: {_diff_cell(o)} pp, McNemar p {_p(o['p_value'])} ({o['method']})")


def build_suites_report(suites: list[str], settings: ReportParams) -> dict:
    """The headline suite's results at the top level, every other suite's under ``suites``."""
    results = {}
    for suite in suites:
        runs = {model: read_jsonl(outcomes_path(model, suite), EvalOutcome) for model in MODELS}
        try:
            results[suite] = build_report(runs, settings)
        except UserError as err:
            raise UserError(f"suite {suite}: {err}") from None
    main_suite = headline(suites)
    report = {"suite": main_suite, **results.pop(main_suite)}
    if results:
        report["suites"] = {name: {k: r[k] for k in ("n_prompts", "models", "comparisons")} for name, r in results.items()}
    return report


@stage_main
def main() -> None:
    params = load_params()
    settings = params.report
    remove_outputs(OUT_JSON, REPORT_MD, CATEGORY_CSV, CATEGORY_PNG)
    report = build_suites_report(params.evaluate.suites, settings)
    rows = category_rows(report)
    markdown, table, png = render_markdown(report), render_csv(rows), render_png(rows, report["confidence"])
    write_json_atomic(OUT_JSON, report)
    write_text_atomic(REPORT_MD, markdown)
    write_text_atomic(CATEGORY_CSV, table)
    write_bytes_atomic(CATEGORY_PNG, png)
    print_summary(report)


if __name__ == "__main__":
    main()
