"""Drift statistics over numpy arrays: PSI (binned or by category) and two-sample KS.

Numeric inputs are *sorted* float64 arrays (sort once, reuse for binning and KS);
nothing here reads files, raises the engine's errors or looks at column names.

PSI (population stability index), for proportions r (reference) and c (current) over
the same bins or categories:

    PSI = sum_i (c_i - r_i) * ln(c_i / r_i)

A proportion of 0 on either side would make a term infinite, so every 0 is replaced by
EPSILON (1e-4) first; the other proportions are left as they are. A bin or category
empty on both sides then adds nothing, and one that appears on only one side adds a
large but finite term: a new category shows up as drift.

KS (two-sample Kolmogorov-Smirnov): D is the largest vertical distance between the two
empirical CDFs, evaluated at every observed value (ties included, as scipy does). Its
p-value comes from the asymptotic Kolmogorov distribution with the effective sample size
n_e = n*m / (n+m) and Stephens' small-sample correction (see `ks_pvalue`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

EPSILON = 1e-4  # stands in for a proportion of 0 in PSI

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Binned:
    """Numeric PSI: the inner bin edges from the reference, proportions per bin, PSI."""

    edges: Floats  # k-1 inner edges for k bins; the outer edges are -inf and +inf
    reference: Floats
    current: Floats
    psi: float


@dataclass(frozen=True)
class ByCategory:
    """Categorical PSI: categories (union of both sides), proportions per category, PSI."""

    categories: list[str]
    reference: Floats
    current: Floats
    psi: float


def psi(reference: Floats, current: Floats, epsilon: float = EPSILON) -> float:
    """PSI of two proportion vectors over the same bins; zeros become `epsilon` first.

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])), 6)
    0.274653
    """
    r = np.where(reference > 0, reference, epsilon)
    c = np.where(current > 0, current, epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference_sorted: Floats, bins: int) -> Floats:
    """Inner edges of `bins` quantile bins of the reference; equal edges collapse into one.

    Quantiles interpolate linearly between order statistics (numpy's default method),
    so the edges are the 1/bins, 2/bins, ... quantiles of the reference.
    """
    n = reference_sorted.size
    position = np.arange(1, bins, dtype=np.float64) / bins * (n - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    fraction = position - low
    lower, upper = reference_sorted[low], reference_sorted[high]
    edges = lower + (upper - lower) * fraction
    return np.unique(edges)


def bin_proportions(sorted_values: Floats, edges: Floats) -> Floats:
    """Share of values in each bin (-inf, e1), [e1, e2), ..., [e_last, +inf)."""
    cuts = np.searchsorted(sorted_values, edges, side="left")
    counts = np.diff(np.concatenate(([0], cuts, [sorted_values.size])))
    return counts / sorted_values.size


def numeric_psi(
    reference_sorted: Floats, current_sorted: Floats, bins: int = 10, epsilon: float = EPSILON
) -> Binned:
    """PSI over quantile bins of the reference; current values outside its range land in
    the end bins, whose outer edges are open."""
    edges = quantile_edges(reference_sorted, bins)
    reference = bin_proportions(reference_sorted, edges)
    current = bin_proportions(current_sorted, edges)
    return Binned(edges, reference, current, psi(reference, current, epsilon))


def categorical_psi(
    reference: Mapping[str, int], current: Mapping[str, int], epsilon: float = EPSILON
) -> ByCategory:
    """PSI over the union of categories (value -> count on each side).

    Categories are ordered by reference share, largest first, then those only the
    current data has, by its share; ties by name.
    """
    names = set(reference) | set(current)
    ref_total = sum(reference.values()) or 1
    cur_total = sum(current.values()) or 1
    ordered = sorted(names, key=lambda k: (-reference.get(k, 0), -current.get(k, 0), k))
    r = np.array([reference.get(k, 0) for k in ordered], dtype=np.float64) / ref_total
    c = np.array([current.get(k, 0) for k in ordered], dtype=np.float64) / cur_total
    return ByCategory(ordered, r, c, psi(r, c, epsilon))


def ks_statistic(reference_sorted: Floats, current_sorted: Floats) -> float:
    """Two-sample KS statistic D = max |F_ref(x) - F_cur(x)| over every observed x.

    Both empirical CDFs step at each sample value (right-continuous), so the supremum is
    reached at one of the pooled values. The two sorted samples are merged (a stable
    sort of two sorted runs is a linear merge) and walked in order. After i reference
    values and j current ones, at the last of each run of equal values (ties step both
    CDFs at once), the CDFs are i/n and j/m, and

        |i/n - j/m| = |i*m - j*n| / (n*m)

    is compared in exact integers, divided once at the end.
    """
    n, m = reference_sorted.size, current_sorted.size
    pooled = np.concatenate((reference_sorted, current_sorted))
    order = np.argsort(pooled, kind="stable")
    # A reference value adds m, a current one subtracts n: after i reference values and
    # j current ones the running sum is i*m - j*n.
    gaps = np.where(order < n, np.int64(m), np.int64(-n))
    np.cumsum(gaps, out=gaps)
    merged = pooled[order]
    last = np.empty(n + m, dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=last[:-1])
    last[-1] = True
    if not last.all():  # ties: only the last of each run of equal values is a CDF value
        gaps = gaps[last]
    return max(int(gaps.max()), -int(gaps.min())) / (n * m)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution K (the limit of sqrt(n) * D).

    Two equivalent series, each used where it converges in a few terms:

        x >= 1.18:  Q(x) = 2 * sum_{j>=1} (-1)^(j-1) * exp(-2 j^2 x^2)
        x <  1.18:  Q(x) = 1 - sqrt(2 pi) / x * sum_{j>=1} exp(-(2j-1)^2 pi^2 / (8 x^2))
    """
    if x <= 0:
        return 1.0
    j = np.arange(1, 21, dtype=np.float64)
    if x >= 1.18:
        terms = np.exp(-2.0 * j * j * x * x) * np.where(j % 2 == 1, 1.0, -1.0)
        value = 2.0 * float(np.sum(terms))
    else:
        odd = 2.0 * j - 1.0
        terms = np.exp(-(odd * odd) * math.pi**2 / (8.0 * x * x))
        value = 1.0 - math.sqrt(2.0 * math.pi) / x * float(np.sum(terms))
    return min(1.0, max(0.0, value))


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Asymptotic two-sided p-value of D for samples of sizes n and m.

    With the effective size n_e = n*m / (n+m), the Kolmogorov distribution is evaluated
    at lambda = (sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) * D (Stephens' correction, which
    makes the limit usable from small samples on): p = Q(lambda).
    """
    effective = n * m / (n + m)
    root = math.sqrt(effective)
    return kolmogorov_sf((root + 0.12 + 0.11 / root) * statistic)
