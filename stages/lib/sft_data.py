"""Turning k raw samples per instruction into one kept SFT example, and the data's QC figures."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from . import checkers
from .cleaning import Cleaned, clean, is_valid
from .generation import Sample
from .prompts import as_completion

PLACEHOLDER_TEXT = "I do not have a good answer to this yet."


@dataclass(frozen=True)
class Candidate:
    index: int
    sample: Sample
    cleaned: Cleaned
    valid: bool
    score: checkers.Score


def score_samples(samples: list[Sample], ids: list[str], kwargs: list[dict], prompt: str, delimiter: str) -> list[Candidate]:
    out = []
    for i, sample in enumerate(samples):
        cleaned = clean(sample.text, delimiter, sample.hit_token_limit)
        out.append(Candidate(i, sample, cleaned, is_valid(cleaned, delimiter), checkers.score(cleaned.text, ids, kwargs, prompt)))
    return out


def rank_key(c: Candidate):
    """Best first: more constraints met strictly, then loosely, then finished over truncated, then earliest."""
    loose = sum(c.score.loose) / len(c.score.loose) if c.score.loose else 1.0
    return (-c.score.strict_fraction, -loose, c.cleaned.truncated, c.index)


def best_valid(candidates: list[Candidate]) -> Candidate | None:
    valid = [c for c in candidates if c.valid]
    return min(valid, key=rank_key) if valid else None


def qc_metrics(all_candidates: list[list[Candidate]], kept: list[Candidate | None], completions: list[str], delimiter: str) -> dict:
    """QC of the generated data, gated on by generate_sft (metrics/sft_data.json).

    ``kept`` holds, per kept record, the chosen candidate or None for a placeholder.
    """
    samples = [c for cs in all_candidates for c in cs]
    first = [cs[0] for cs in all_candidates if cs]

    def rate(n: int, total: int) -> float:
        return round(n / total, 4) if total else 0.0

    def pass_rates(scores: list[checkers.Score]) -> dict:
        if not scores:
            return {"prompt_strict": 0.0, "instruction_strict": 0.0}
        acc = checkers.accuracy(scores)
        return {"prompt_strict": round(acc["prompt_strict"], 4), "instruction_strict": round(acc["instruction_strict"], 4)}

    return {
        "n_instructions": len(all_candidates),
        "n_samples": len(samples),
        "n_kept": len(kept),
        "n_dropped": len(all_candidates) - len(kept),
        "placeholder_rate": rate(sum(c is None for c in kept), len(all_candidates)),
        # instructions without a valid model response: placeholders plus dropped ones
        "failed_rate": rate(len(all_candidates) - sum(c is not None for c in kept), len(all_candidates)),
        "kept": pass_rates([c.score for c in kept if c is not None]),
        "first_sample": pass_rates([c.score for c in first]),
        "valid_sample_rate": rate(sum(c.valid for c in samples), len(samples)),
        "truncation_rate": rate(sum(c.cleaned.truncated for c in samples), len(samples)),
        "run_on_rate": rate(sum(c.cleaned.ran_on for c in samples), len(samples)),
        "delimiter_leak_rate": rate(sum(delimiter in t for t in completions), len(completions)),
        "duplicate_rate": rate(len(completions) - len(set(completions)), len(completions)),
        "median_response_tokens": statistics.median([c.sample.n_tokens for c in samples]) if samples else 0,
        "generated_tokens": sum(c.sample.n_tokens for c in samples),
    }
