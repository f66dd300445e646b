"""The QC figures of generated SFT data (metrics/generate_sft.json), overall and per route (``source``)."""
from __future__ import annotations

import statistics
from collections import defaultdict

from . import checkers
from .sft_routes import Attempt

PLACEHOLDER_TEXT = "I do not have a good answer to this yet."


def _rate(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def _pass_rates(scores: list[checkers.Score]) -> dict:
    if not scores:
        return {"prompt_strict": 0.0, "instruction_strict": 0.0}
    acc = checkers.accuracy(scores)
    return {"prompt_strict": round(acc["prompt_strict"], 4), "instruction_strict": round(acc["instruction_strict"], 4)}


def _distribution(values: list[int]) -> dict:
    if not values:
        return {"min": None, "p10": None, "median": None, "p90": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"min": ordered[0], "p10": pick(0.1), "median": statistics.median(ordered), "p90": pick(0.9),
            "max": ordered[-1]}


def record_score(record: dict) -> checkers.Score:
    """A kept record checked once more against its own (possibly rewritten) instruction."""
    return checkers.score(record["completion"].strip(), record["instruction_id_list"], record["kwargs"],
                          record["instruction"])


def qc_metrics(sampled: list[list[Attempt]], revised: list[list[Attempt]], records: list[dict], delimiter: str) -> dict:
    """Figures of the whole run: what sampling found, what each route contributed, and the kept data."""
    samples = [a for per in sampled for a in per]
    revisions = [a for per in revised for a in per]
    first = [per[0] for per in sampled if per]
    scores = [record_score(r) for r in records]
    completions = [r["completion"] for r in records]
    by_source: dict[str, dict] = {}
    grouped: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        grouped[r["source"]].append(i)
    for source, idx in sorted(grouped.items()):
        by_source[source] = {
            "n": len(idx),
            "prompt_strict": _pass_rates([scores[i] for i in idx])["prompt_strict"],
            "response_words": _distribution([len(checkers.words(records[i]["completion"])) for i in idx]),
        }
    n_instructions = len(sampled)
    n_failed = n_instructions - sum(r["source"] != "placeholder" for r in records)
    return {
        "n_instructions": n_instructions,
        "n_samples": len(samples),
        "n_revisions": len(revisions),
        "n_kept": len(records),
        "n_dropped": n_instructions - len(records),
        "placeholder_rate": _rate(sum(r["source"] == "placeholder" for r in records), n_instructions),
        # instructions without a passing response from any route: placeholders plus dropped ones
        "failed_rate": _rate(n_failed, n_instructions),
        "kept": _pass_rates(scores),
        "by_source": by_source,
        "first_sample": _pass_rates([a.score for a in first]),
        "sample_pass_rate": _rate(sum(a.passes for a in samples), len(samples)),
        "revision_pass_rate": _rate(sum(a.passes for a in revisions), len(revisions)),
        "valid_sample_rate": _rate(sum(a.valid for a in samples), len(samples)),
        "truncation_rate": _rate(sum(a.cleaned.truncated for a in samples), len(samples)),
        "run_on_rate": _rate(sum(a.cleaned.ran_on for a in samples), len(samples)),
        "delimiter_leak_rate": _rate(sum(delimiter in t for t in completions), len(completions)),
        "duplicate_rate": _rate(len(completions) - len(set(completions)), len(completions)),
        "response_words": _distribution([len(checkers.words(c)) for c in completions]),
        "median_sample_tokens": statistics.median([a.n_tokens for a in samples]) if samples else 0,
        "generated_tokens": sum(a.n_tokens for a in samples + revisions),
    }
