"""engine.core.drift_stats: PSI by hand, quantile bins, KS against scipy, the Kolmogorov tail."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from engine.core import drift_stats as stats


def test_psi_matches_a_hand_computation() -> None:
    # r = (0.5, 0.3, 0.2), c = (0.4, 0.4, 0.2):
    #   (0.4 - 0.5) * ln(0.4 / 0.5) = -0.1 * -0.2231436 = 0.0223144
    #   (0.4 - 0.3) * ln(0.4 / 0.3) =  0.1 *  0.2876821 = 0.0287682
    #   (0.2 - 0.2) * ln(1)         =  0
    #   PSI                                              = 0.0510826
    value = stats.psi(np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.4, 0.2]))
    assert value == pytest.approx(0.0510826, abs=1e-7)


def test_numeric_psi_on_a_small_table_matches_a_hand_computation() -> None:
    # Reference 1..10, 2 bins: the median of 1..10 is 5.5, so bins (-inf, 5.5), [5.5, inf)
    # hold 5 and 5 reference values: r = (0.5, 0.5).
    # Current 1, 2, 3, 6, ..., 12: 3 values below 5.5 and 7 above: c = (0.3, 0.7).
    #   (0.3 - 0.5) * ln(0.3 / 0.5) = -0.2 * -0.5108256 = 0.1021651
    #   (0.7 - 0.5) * ln(0.7 / 0.5) =  0.2 *  0.3364722 = 0.0672944
    #   PSI                                              = 0.1694596
    reference = np.arange(1.0, 11.0)
    current = np.array([1.0, 2, 3, 6, 7, 8, 9, 10, 11, 12])
    found = stats.numeric_psi(reference, current, bins=2)
    assert found.edges.tolist() == [5.5]
    assert found.reference.tolist() == [0.5, 0.5]
    assert found.current.tolist() == [0.3, 0.7]
    assert found.psi == pytest.approx(0.1694596, abs=1e-7)


def test_categorical_psi_gives_a_new_category_epsilon() -> None:
    # Reference a:2 b:2, current a:2 b:1 c:1; c is new, so its reference share 0 -> 1e-4.
    #   a: (0.5 - 0.5) * ln(1)                  = 0
    #   b: (0.25 - 0.5) * ln(0.25 / 0.5)        = -0.25 * -0.6931472 = 0.1732868
    #   c: (0.25 - 0.0001) * ln(0.25 / 0.0001)  = 0.2499 * 7.8240460 = 1.9552291
    #   PSI                                                           = 2.1285159
    found = stats.categorical_psi({"a": 2, "b": 2}, {"a": 2, "b": 1, "c": 1})
    assert found.categories == ["a", "b", "c"]
    assert found.reference.tolist() == [0.5, 0.5, 0.0]  # reported as measured, not with epsilon
    assert found.psi == pytest.approx(2.1285159, abs=1e-6)


def test_identical_samples_score_zero() -> None:
    values = np.sort(np.random.default_rng(3).normal(size=1000))
    assert stats.numeric_psi(values, values).psi == 0.0
    assert stats.ks_statistic(values, values) == 0.0
    assert stats.ks_pvalue(0.0, 1000, 1000) == 1.0


def test_equal_quantile_edges_collapse_and_outer_bins_are_open() -> None:
    reference = np.array([0.0] * 8 + [1.0, 2.0])  # the 25/50/75 % quantiles are all 0
    edges = stats.quantile_edges(reference, 4)
    assert edges.tolist() == [0.0]
    proportions = stats.bin_proportions(np.array([-100.0, 0.0, 100.0]), edges)
    assert proportions.tolist() == pytest.approx([1 / 3, 2 / 3])


def test_quantile_edges_match_numpy_quantile() -> None:
    values = np.sort(np.random.default_rng(5).exponential(size=1001))
    expected = np.unique(np.quantile(values, np.arange(1, 10) / 10))
    assert np.allclose(stats.quantile_edges(values, 10), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 8), (50, 80), (999, 1000), (5000, 20000)])
@pytest.mark.parametrize("decimals", [None, 1, 0])  # None: no ties; 1 and 0: many ties
def test_ks_statistic_equals_scipy(n: int, m: int, decimals: int | None) -> None:
    rng = np.random.default_rng(n * 31 + m)
    a, b = rng.normal(size=n), rng.normal(0.3, 1.2, size=m)
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)
    expected = scipy.stats.ks_2samp(a, b).statistic
    assert stats.ks_statistic(np.sort(a), np.sort(b)) == pytest.approx(expected, abs=1e-9)


def test_ks_statistic_with_ties_across_the_samples() -> None:
    # Both CDFs step at 1 and 2 together; D is 0.5 at x = 1 (0.75 vs 0.25).
    a, b = np.array([1.0, 1.0, 1.0, 2.0]), np.array([1.0, 2.0, 2.0, 2.0])
    assert stats.ks_statistic(a, b) == 0.5 == scipy.stats.ks_2samp(a, b).statistic


@pytest.mark.parametrize(("n", "m", "shift"), [(60, 80, 0.3), (500, 700, 0.1), (4000, 3000, 0.05)])
def test_ks_pvalue_is_close_to_scipys_asymptotic_one(n: int, m: int, shift: float) -> None:
    # scipy's method="asymp" evaluates the finite-n Kolmogorov distribution at round(n_e);
    # ours is the limit with Stephens' correction: close, not equal.
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(shift, size=m)
    expected = scipy.stats.ks_2samp(a, b, method="asymp")
    d = stats.ks_statistic(np.sort(a), np.sort(b))
    assert stats.ks_pvalue(d, n, m) == pytest.approx(expected.pvalue, abs=0.03)


def test_kolmogorov_tail_known_values_and_continuity() -> None:
    assert stats.kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-4)  # the 5 % point
    assert stats.kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-4)  # the 1 % point
    assert stats.kolmogorov_sf(0.0) == 1.0
    assert stats.kolmogorov_sf(10.0) < 1e-80
    for x in np.linspace(0.2, 4, 39):  # scipy's kstwobign is this limit distribution
        assert stats.kolmogorov_sf(x) == pytest.approx(scipy.stats.kstwobign.sf(x), abs=1e-12)
    below, above = stats.kolmogorov_sf(1.18 - 1e-12), stats.kolmogorov_sf(1.18)
    assert math.isclose(below, above, abs_tol=1e-12)  # the two series agree where they meet
    grid = [stats.kolmogorov_sf(x) for x in np.linspace(0.05, 3, 60)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(grid))
