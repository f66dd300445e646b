"""The statistics behind the report, checked against hand-computed values on small tables."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from stages.lib.stats import (
    benjamini_hochberg,
    cohens_h,
    mcnemar,
    paired_bootstrap_ci,
    paired_comparison,
    wilson_interval,
)


# ---- McNemar ------------------------------------------------------------------------------------


def test_mcnemar_exact_small_table():
    # b=1, c=9: two-sided binomial with p=0.5 on 10 trials is 2 * P(X <= 1) = 2 * (1 + 10) / 2**10.
    result = mcnemar(1, 9)
    assert result["method"] == "exact"
    assert result["p_value"] == pytest.approx(22 / 1024)
    assert result["statistic"] == 1.0
    assert mcnemar(9, 1)["p_value"] == pytest.approx(22 / 1024)


def test_mcnemar_chi_square_with_continuity_correction():
    # b=10, c=25 (35 discordant pairs >= 25): (|10 - 25| - 1)^2 / 35 = 196 / 35 = 5.6 on 1 df.
    result = mcnemar(10, 25)
    assert result["method"] == "chi2_cc"
    assert result["statistic"] == pytest.approx(5.6)
    assert result["p_value"] == pytest.approx(sps.chi2.sf(5.6, df=1))
    assert result["p_value"] == pytest.approx(0.017960, abs=1e-6)


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs():
    assert mcnemar(12, 12)["method"] == "exact"
    assert mcnemar(12, 13)["method"] == "chi2_cc"
    # Equal counts: the corrected numerator is floored at 0, not (0 - 1)^2 = 1.
    assert mcnemar(15, 15)["statistic"] == 0.0
    assert mcnemar(15, 15)["p_value"] == 1.0


def test_mcnemar_without_discordant_pairs_has_no_evidence():
    assert mcnemar(0, 0)["p_value"] == 1.0


# ---- Wilson ---------------------------------------------------------------------------------


def test_wilson_interval_by_hand():
    # 8/10, z = 1.959964: centre = (0.8 + z²/20) / (1 + z²/10) = 0.716738,
    # half-width = z * sqrt(0.8 * 0.2 / 10 + z²/400) / (1 + z²/10) = 0.226578.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.490162, abs=1e-6)
    assert high == pytest.approx(0.943318, abs=1e-6)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    narrow, wide = wilson_interval(8, 10, 0.80), wilson_interval(8, 10, 0.99)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


# ---- Benjamini-Hochberg ---------------------------------------------------------------------


def test_benjamini_hochberg_by_hand():
    # Sorted: 0.005, 0.01, 0.03, 0.04 -> times m/rank = 4/1, 4/2, 4/3, 4/4 -> 0.02, 0.02, 0.04, 0.04;
    # the running minimum from the top changes nothing here. Back in input order:
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_benjamini_hochberg_step_up_lowers_a_smaller_p_value():
    # 0.035 alone would scale to 0.035 * 4/3 = 0.04667, but the larger 0.04 scales to 0.04 * 4/4 = 0.04,
    # and step-up takes the minimum over all larger ranks: 0.035 is adjusted down to 0.04.
    adjusted = benjamini_hochberg([0.01, 0.04, 0.035, 0.005])
    assert adjusted == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_benjamini_hochberg_edges():
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([0.3]) == [0.3]
    assert benjamini_hochberg([0.9, 0.95, 1.0]) == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        benjamini_hochberg([0.1, float("nan")])


# ---- Cohen's h -----------------------------------------------------------------------------


def test_cohens_h_is_signed():
    assert cohens_h(0.5, 0.5) == 0.0
    assert cohens_h(0.0, 0.5) == pytest.approx(math.pi / 2)  # 2 asin(sqrt(0.5)) = pi/2
    assert cohens_h(0.0, 1.0) == pytest.approx(math.pi)
    assert cohens_h(0.2, 0.5) > 0
    assert cohens_h(0.5, 0.2) == pytest.approx(-cohens_h(0.2, 0.5))


# ---- bootstrap and the combined comparison -------------------------------------------------


def _correlated_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model A right 50% of the time, and B = A with some wrong answers fixed: true diff +0.2."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.5
    b = a | (rng.random(n) < 0.4)  # P(B) = 0.5 + 0.5 * 0.4 = 0.7
    return a.astype(int), b.astype(int)


def test_paired_bootstrap_contains_true_diff_and_is_reproducible():
    a, b = _correlated_pairs(400, seed=1)
    diff, low, high = paired_bootstrap_ci(a, b, n_resamples=1000, seed=7)
    assert diff == pytest.approx(b.mean() - a.mean())
    assert low < 0.2 < high
    assert low < diff < high
    assert paired_bootstrap_ci(a, b, n_resamples=1000, seed=7) == (diff, low, high)
    assert paired_bootstrap_ci(a, b, n_resamples=1000, seed=8) != (diff, low, high)


def test_paired_bootstrap_without_differences_is_a_point():
    same = [1, 0, 1, 1]
    assert paired_bootstrap_ci(same, same, n_resamples=200, seed=0) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1, 0], [1], n_resamples=200, seed=0)


def test_paired_comparison_counts_and_direction():
    a = [True, True, False, False, True]
    b = [True, False, True, True, True]
    result = paired_comparison(a, b, n_resamples=500, seed=0)
    assert (result["n"], result["b"], result["c"]) == (5, 1, 2)  # b: A right & B wrong; c: A wrong & B right
    assert result["acc_a"] == pytest.approx(0.6)
    assert result["acc_b"] == pytest.approx(0.8)
    assert result["diff"] == pytest.approx(0.2)
    assert result["ci_low"] <= result["diff"] <= result["ci_high"]
    assert result["method"] == "exact"
    assert result["p_value"] == pytest.approx(1.0)  # 1 of 3 discordant: as balanced as 3 can be
    assert result["cohens_h"] == pytest.approx(cohens_h(0.6, 0.8))
    assert result["cohens_h"] > 0
