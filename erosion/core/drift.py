"""How far one night's distributions and counts moved from reference nights: the rules monitoring alerts on.

Pure functions on counts, so that they run on what a streamed pass summarised (10^7 rows fit in a histogram):

- the stage mix: the population stability index (PSI), sum (a - r) ln(a / r) over the shares, and the
  Jensen-Shannon distance (SciPy's, base 2: 0 same, 1 disjoint);
- a continuous quantity (a probability, an intensity): the two-sample Kolmogorov-Smirnov statistic D of two
  histograms over the same bins (the largest gap between their cumulative shares at a bin edge: exact for values
  that fall on the bins, at most one bin's mass below the statistic of the raw values otherwise) and its
  asymptotic p-value as SciPy's ``ks_2samp`` gives it;
- a count: outside mean +- k standard deviations of the reference nights' counts, with a floor so that a
  constant count (standard deviation 0) does not alert on a change of one row.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial import distance

SMOOTHING = 1e-4
"""Added to every share before the PSI's logarithm, so that a stage absent on one side gives a large finite value."""


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts as shares of their sum (zeros where the sum is 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def psi(actual: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index of the counts ``actual`` against ``reference`` (same categories)."""
    a, r = shares(actual) + SMOOTHING, shares(reference) + SMOOTHING
    return float(np.sum((a - r) * np.log(a / r)))


def js_distance(actual: np.ndarray, reference: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count vectors."""
    if not np.sum(actual) or not np.sum(reference):
        return float("nan")
    return float(distance.jensenshannon(shares(actual), shares(reference), base=2))


def ks(actual: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(D, p) of the two-sample Kolmogorov-Smirnov test of two histograms over the same bins; (nan, nan) if one
    is empty. p is the asymptotic one (SciPy's ``kstwo`` at the effective size n m / (n + m))."""
    n, m = float(np.sum(actual)), float(np.sum(reference))
    if not n or not m:
        return float("nan"), float("nan")
    gap = np.abs(np.cumsum(actual) / n - np.cumsum(reference) / m)
    d = float(gap.max())
    return d, float(stats.kstwo.sf(d, round(n * m / (n + m))))


def histogram(values: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """Counts of the finite ``values`` in ``bins`` equal bins over [low, high] (outside values in the end bins)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    index = np.clip(((values - low) / (high - low) * bins).astype(np.int64), 0, bins - 1)
    return np.bincount(index, minlength=bins)


def quantiles(counts: np.ndarray, low: float, high: float, levels: tuple[float, ...]) -> list[float]:
    """The ``levels`` quantiles of the values a histogram holds (each its bin's upper edge); nan if empty."""
    total = np.sum(counts)
    if not total:
        return [float("nan")] * len(levels)
    edges = np.linspace(low, high, len(counts) + 1)[1:]
    cumulative = np.cumsum(counts) / total
    return [float(edges[np.searchsorted(cumulative, level - 1e-12)]) for level in levels]


def count_band(reference: list[float], sigmas: float, floor: float, share: float) -> tuple[float, float]:
    """The band a count may move in: mean +- max(sigmas sd, floor, share of the mean) over the reference nights."""
    mean = float(np.mean(reference))
    sd = float(np.std(reference, ddof=1)) if len(reference) > 1 else 0.0
    width = max(sigmas * sd, floor, share * abs(mean))
    return mean - width, mean + width


def entropy(probs: np.ndarray) -> np.ndarray:
    """Each row's Shannon entropy in bits (0: certain; log2 6 = 2.58: uniform over six stages)."""
    probs = np.asarray(probs, dtype=np.float64)
    logs = np.log2(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=1)
