"""Small-sample statistics for comparing models on the same prompts.

Every function is pure: the same arguments give the same numbers, and none returns NaN.
Paired tests are used throughout because all models answer the same prompts, so the
per-prompt differences carry far more information than two independent accuracies.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

# Below this many discordant pairs the chi-square approximation is poor, so McNemar is exact.
EXACT_MCNEMAR_BELOW = 25


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps its
    coverage at the small n and extreme accuracies typical here. With ``n == 0`` nothing is
    known about the proportion, so the whole range ``(0.0, 1.0)`` is returned.
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(b: int, c: int) -> dict:
    """McNemar's test on the discordant counts ``b`` and ``c`` of a paired 2x2 table.

    With ``b + c < 25`` the test is exact: a two-sided binomial test of ``b`` out of ``b + c``
    at p = 0.5, and ``statistic`` is ``min(b, c)``. Otherwise it is the chi-square test with
    continuity correction, ``max(|b - c| - 1, 0)^2 / (b + c)`` on 1 degree of freedom (the
    ``max`` keeps ``b == c`` at statistic 0). No discordant pairs means no evidence: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return {"statistic": 0.0, "p_value": 1.0, "method": "exact"}
    if n < EXACT_MCNEMAR_BELOW:
        p = stats.binomtest(int(b), int(n), 0.5, alternative="two-sided").pvalue
        return {"statistic": float(min(b, c)), "p_value": float(min(p, 1.0)), "method": "exact"}
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return {"statistic": float(statistic), "p_value": float(stats.chi2.sf(statistic, df=1)), "method": "chi2_cc"}


def _as_binary(values: Sequence, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be a flat sequence of 0/1 (or bool) values")
    return arr


def paired_bootstrap_ci(
    a: Sequence, b: Sequence, n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Percentile bootstrap interval for ``mean(b) - mean(a)`` over paired 0/1 outcomes.

    Prompts are resampled with replacement, keeping each prompt's (a, b) pair together so the
    interval reflects the paired design. A numpy Generator seeded with ``seed`` makes it
    reproducible. Returns ``(diff, low, high)``.
    """
    _check_confidence(confidence)
    a_arr, b_arr = _as_binary(a, "a"), _as_binary(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must pair up, got lengths {a_arr.size} and {b_arr.size}")
    if a_arr.size == 0:
        raise ValueError("need at least one pair")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    per_prompt = b_arr - a_arr
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, per_prompt.size, size=(n_resamples, per_prompt.size))
    resampled = per_prompt[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return float(per_prompt.mean()), float(low), float(high)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h effect size from proportion ``p1`` to ``p2``: ``2 asin(sqrt(p2)) - 2 asin(sqrt(p1))``.

    Signed: positive when ``p2 > p1``. Rough reading: 0.2 small, 0.5 medium, 0.8 large.
    """
    for name, p in (("p1", p1), ("p2", p2)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a proportion in [0, 1], got {p}")
    return 2.0 * math.asin(math.sqrt(p2)) - 2.0 * math.asin(math.sqrt(p1))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values, in the input order.

    Step-up: each sorted p-value is scaled by ``m / rank``, then a running minimum from the
    largest down keeps the adjusted values monotone; results are capped at 1. Comparing an
    adjusted value with alpha controls the false discovery rate across the family.
    """
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    if p.ndim != 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_values must be a flat sequence of numbers in [0, 1]")
    return [float(x) for x in stats.false_discovery_control(p, method="bh")]


def paired_comparison(
    a_outcomes: Sequence[bool],
    b_outcomes: Sequence[bool],
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> dict:
    """Compare model B against model A on the same prompts (outcomes aligned by prompt).

    ``diff`` is ``acc_b - acc_a`` (positive: B is better) with a paired bootstrap interval
    ``[ci_low, ci_high]``. The discordant counts are ``b`` = A right and B wrong, ``c`` = A wrong
    and B right; McNemar's test uses them. ``cohens_h`` is signed the same way as ``diff``.
    """
    a = _as_binary(a_outcomes, "a_outcomes").astype(bool)
    b = _as_binary(b_outcomes, "b_outcomes").astype(bool)
    diff, low, high = paired_bootstrap_ci(a, b, n_resamples, seed, confidence)
    b_count, c_count = int((a & ~b).sum()), int((~a & b).sum())
    test = mcnemar(b_count, c_count)
    acc_a, acc_b = float(a.mean()), float(b.mean())
    return {
        "n": int(a.size),
        "acc_a": acc_a,
        "acc_b": acc_b,
        "diff": diff,
        "ci_low": low,
        "ci_high": high,
        "b": b_count,
        "c": c_count,
        "statistic": test["statistic"],
        "p_value": test["p_value"],
        "method": test["method"],
        "cohens_h": cohens_h(acc_a, acc_b),
    }
