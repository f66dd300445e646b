"""Compare one model's evaluation at two revisions: did a change to the pipeline help?

    python -m stages.compare REV_A REV_B [--model dpo] [--suite test] [--repo .]

Each revision may be anything DVC resolves: a commit, branch or tag, or a DVC experiment name
(``dvc.api.open`` resolves experiment names through ``dvc.scm.resolve_rev``). The file
``data/eval/<model>-<suite>.jsonl`` is read at both revisions, whether Git or DVC tracks it,
and compared prompt by prompt as "REV_B vs REV_A" (a positive diff means REV_B is better).
Bootstrap settings are the schema defaults of the ``report`` params (``ReportParams``).
Exits with status 2 and one line on stderr when a revision or the file is missing, or the
revisions evaluated different prompts.
"""
from __future__ import annotations

import argparse

import dvc.api
from dvc.exceptions import DvcException, PathMissingError
from dvc.scm import RevError

from stages.lib.errors import UserError, stage_main
from stages.lib.eval_metrics import PROMPT_MEASURES, align_outcomes
from stages.lib.params import ReportParams
from stages.lib.paths import MODELS, outcomes_path
from stages.lib.records import EvalOutcome, parse_records
from stages.lib.stats import paired_comparison


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stages.compare",
        description="Paired comparison of one model's eval outcomes at two Git revisions or DVC experiments.",
    )
    parser.add_argument("rev_a", metavar="REV_A", help="baseline revision (commit, branch, tag or experiment name)")
    parser.add_argument("rev_b", metavar="REV_B", help="revision compared against REV_A")
    parser.add_argument("--model", choices=MODELS, default="dpo", help="which model's outcomes (default: dpo)")
    parser.add_argument("--suite", default="test", help="which suite's outcomes (default: test)")
    parser.add_argument("--repo", default=".", help="path or URL of the DVC repository (default: .)")
    return parser.parse_args(argv)


def read_outcomes(repo: str, rev: str, model: str, suite: str) -> list[EvalOutcome]:
    """Read and check ``data/eval/<model>-<suite>.jsonl`` as it was at ``rev``."""
    path = outcomes_path(model, suite).as_posix()
    try:
        with dvc.api.open(path, repo=repo, rev=rev, encoding="utf-8") as fh:
            text = fh.read()
    except RevError:
        raise UserError(f"revision {rev!r} not found in {repo} (not a commit, branch, tag or experiment)") from None
    except PathMissingError:
        raise UserError(
            f"{path} is missing at revision {rev!r}: Git does not hold it, and neither does the DVC cache "
            f"(was the {model} model evaluated on {suite} there? if so, fetch its data with `dvc pull` or `dvc exp pull`)"
        ) from None
    except (DvcException, OSError) as exc:
        raise UserError(f"could not read {path} at revision {rev!r} in {repo}: {exc}") from None
    return parse_records(text.encode("utf-8").splitlines(), f"{path}@{rev}", EvalOutcome)


def format_table(results: dict[str, dict], confidence: float) -> str:
    """A plain-text table, one row per measure; rates and differences in percent."""
    header = ["measure", "A", "B", "diff pp", f"{100 * confidence:g}% CI", "b / c", "McNemar p", "test", "h"]
    rows = [header] + [
        [
            measure, f"{100 * r['acc_a']:.1f}%", f"{100 * r['acc_b']:.1f}%", f"{100 * r['diff']:+.1f}",
            f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]", f"{r['b']} / {r['c']}",
            f"{r['p_value']:.3f}", r["method"], f"{r['cohens_h']:+.2f}",
        ]
        for measure, r in results.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = {
        f"REV_A ({args.rev_a})": read_outcomes(args.repo, args.rev_a, args.model, args.suite),
        f"REV_B ({args.rev_b})": read_outcomes(args.repo, args.rev_b, args.model, args.suite),
    }
    keys, aligned = align_outcomes(runs)
    a_run, b_run = aligned.values()
    settings = ReportParams()
    results = {
        measure: paired_comparison(
            [getattr(o, measure) for o in a_run],
            [getattr(o, measure) for o in b_run],
            settings.bootstrap_samples,
            settings.seed,
            1.0 - settings.alpha,
        )
        for measure in PROMPT_MEASURES
    }
    print(f"{args.model} on {args.suite}: B = {args.rev_b} vs A = {args.rev_a}, {len(keys)} prompts (diff = B - A)")
    print(format_table(results, 1.0 - settings.alpha))
    print("An interval containing 0 means no detectable difference; b = prompts only A got right, c = only B.")


if __name__ == "__main__":
    main()
