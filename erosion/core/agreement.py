"""Agreement between raters of Ratingen stages (a rater may be the model): pure functions on arrays.

The accuracies are the paper's: global accuracy, balanced accuracy (the mean of the per-class recall over the
classes present in the reference, as scikit-learn's ``balanced_accuracy_score`` defines it) and +-1 balanced
accuracy (the same, a prediction within one stage of the reference counting as right). They are computed
from a confusion matrix, so that confusion matrices counted on several workers can be summed first.

Intervals are 95 %: Wald intervals for the accuracies (for a balanced form, the mean of per-class recalls
r_c on n_c joints has variance sum_c r_c (1 - r_c) / n_c / C^2, C the classes present); the quadratic kappa's
interval from the asymptotic variance of Fleiss, Cohen and Everitt (1969); the ICC's from the F distribution
(Shrout and Fleiss 1979, McGraw and Wong 1996).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from erosion.core.domain import NUM_STAGES

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95 % confidence interval."""

    value: float
    low: float
    high: float


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, k: int = NUM_STAGES) -> np.ndarray:
    """(k, k) counts: row = the reference's stage, column = the other rater's stage."""
    reference, predicted = np.asarray(reference), np.asarray(predicted)
    if reference.shape != predicted.shape or reference.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of one length; got shapes {reference.shape} and {predicted.shape}.")
    for name, stages in (("reference", reference), ("predicted", predicted)):
        if stages.size and (stages.min() < 0 or stages.max() >= k):
            raise ValueError(f"{name} stages must lie in 0..{k - 1}; got {stages.min()}..{stages.max()}.")
    return np.bincount(reference.astype(np.int64) * k + predicted, minlength=k * k).reshape(k, k)


def global_accuracy(confusion: np.ndarray) -> float:
    """The share of joints on which both raters give the same stage."""
    return float(np.trace(confusion) / _total(confusion))


def balanced_accuracy(confusion: np.ndarray) -> float:
    """The mean recall over the classes present in the reference (rows with any count)."""
    return _mean_recall(confusion, within=0)


def pm1_balanced_accuracy(confusion: np.ndarray) -> float:
    """The mean over present reference classes of the share rated within one stage of the reference."""
    return _mean_recall(confusion, within=1)


def global_accuracy_ci(confusion: np.ndarray) -> Estimate:
    """Global accuracy with its Wald interval, p +- 1.96 sqrt(p (1 - p) / n)."""
    p, n = global_accuracy(confusion), _total(confusion)
    return _wald(p, p * (1 - p) / n)


def balanced_accuracy_ci(confusion: np.ndarray) -> Estimate:
    """Balanced accuracy with its Wald interval (variance of a mean of independent per-class recalls)."""
    return _mean_recall_ci(confusion, within=0)


def pm1_balanced_accuracy_ci(confusion: np.ndarray) -> Estimate:
    """+-1 balanced accuracy with its Wald interval."""
    return _mean_recall_ci(confusion, within=1)


def accuracies(confusion: np.ndarray) -> dict[str, Estimate]:
    """The paper's three accuracies with their Wald intervals, by name: accuracy, balanced, +-1 balanced."""
    return {
        "accuracy": global_accuracy_ci(confusion),
        "balanced_accuracy": balanced_accuracy_ci(confusion),
        "pm1_balanced_accuracy": pm1_balanced_accuracy_ci(confusion),
    }


def estimate_columns(estimates: dict[str, Estimate]) -> dict[str, float]:
    """Estimates as table columns: ``<name>``, ``<name>_low``, ``<name>_high``."""
    columns = {}
    for name, e in estimates.items():
        columns |= {name: e.value, f"{name}_low": e.low, f"{name}_high": e.high}
    return columns


STATISTICS = ("accuracy", "balanced_accuracy", "pm1_balanced_accuracy", "kappa")
"""What :func:`pair_statistics` estimates for a pair of raters."""


def pair_statistics(confusion: np.ndarray) -> dict:
    """The three accuracies and quadratic kappa, with intervals, of a pair's confusion matrix (rows: the
    reference) as table columns; NaN and a ``note`` where they are undefined (no joint in common, or one stage
    for every joint)."""
    values: dict = {f"{s}{end}": np.nan for s in STATISTICS for end in ("", "_low", "_high")}
    values["note"] = None
    if not confusion.sum():
        return values | {"note": "no joint rated by both"}
    estimates = accuracies(confusion)
    try:
        estimates["kappa"] = confusion_kappa(confusion)
    except ValueError as e:
        values["note"] = str(e)
    return values | estimate_columns(estimates)


def quadratic_kappa(a: np.ndarray, b: np.ndarray, k: int = NUM_STAGES) -> Estimate:
    """Cohen's kappa with quadratic weights and the asymptotic 95 % interval of Fleiss, Cohen and Everitt (1969)."""
    return confusion_kappa(confusion_matrix(a, b, k))


def confusion_kappa(confusion: np.ndarray) -> Estimate:
    """:func:`quadratic_kappa` of the pair whose (k, k) confusion matrix this is."""
    k = confusion.shape[0]
    n = _total(confusion)
    p = confusion / n
    i = np.arange(k)
    weights = 1 - np.subtract.outer(i, i) ** 2 / (k - 1) ** 2
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    observed, expected = (weights * p).sum(), (weights * np.outer(rows, cols)).sum()
    if expected == 1:
        raise ValueError("kappa is undefined: both raters give one and the same stage to every joint.")
    kappa = (observed - expected) / (1 - expected)
    row_mean, col_mean = weights @ cols, rows @ weights
    spread = (p * (weights - np.add.outer(row_mean, col_mean) * (1 - kappa)) ** 2).sum()
    variance = (spread - (kappa - expected * (1 - kappa)) ** 2) / (n * (1 - expected) ** 2)
    return _wald(float(kappa), float(max(variance, 0.0)), clip=(-1.0, 1.0))


def expected_confusion(probs: np.ndarray, predicted: np.ndarray, k: int = NUM_STAGES) -> np.ndarray:
    """(k, k) expected counts of a rater's stages (rows) against the model's (columns) on joints the rater has
    not rated: each joint adds its calibrated P(stage j) to row j of its predicted stage's column.

    Calibrated against that rater, P(stage j) is the chance the rater would say j, so the expected counts give
    expected accuracies and kappa (``pair_statistics`` takes the matrix as it takes counts). Sums of batches add.
    """
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros((len(predicted), k))
    onehot[np.arange(len(predicted)), np.asarray(predicted, dtype=np.int64)] = 1.0
    return probs.T @ onehot


def _mean_recall(confusion: np.ndarray, within: int) -> float:
    return _mean_recall_ci(confusion, within).value


def _mean_recall_ci(confusion: np.ndarray, within: int) -> Estimate:
    _total(confusion)
    k = confusion.shape[0]
    near = np.abs(np.subtract.outer(np.arange(k), np.arange(k))) <= within
    rows = confusion.sum(axis=1)
    present = rows > 0
    recall = (confusion * near).sum(axis=1)[present] / rows[present]
    variance = (recall * (1 - recall) / rows[present]).sum() / present.sum() ** 2
    return _wald(float(np.mean(recall)), float(variance))


def _wald(value: float, variance: float, clip: tuple[float, float] = (0.0, 1.0)) -> Estimate:
    half = Z95 * float(np.sqrt(variance))
    return Estimate(float(value), max(clip[0], value - half), min(clip[1], value + half))


def _total(confusion: np.ndarray) -> float:
    total = float(confusion.sum())  # expected counts are not whole
    if total == 0:
        raise ValueError("the confusion matrix is empty: no joint rated by both raters.")
    return total


ICC_FORMS = {
    "ICC1": "one-way random, single rater",
    "ICC2": "two-way random, absolute agreement, single rater",
    "ICC3": "two-way mixed, consistency, single rater",
    "ICC1k": "one-way random, mean of k raters",
    "ICC2k": "two-way random, absolute agreement, mean of k raters",
    "ICC3k": "two-way mixed, consistency, mean of k raters",
}
"""The six Shrout-Fleiss forms; pingouin calls them ICC(1,1), ICC(A,1), ICC(C,1), ICC(1,k), ICC(A,k), ICC(C,k)."""


@dataclass(frozen=True)
class ICC:
    """An intraclass correlation with its 95 % interval, its F test and Cicchetti's label."""

    form: str  # a key of ICC_FORMS
    value: float
    low: float
    high: float
    f: float
    df1: int
    df2: float
    p: float

    @property
    def label(self) -> str:
        return cicchetti(self.value)


def icc(ratings: np.ndarray, form: str = "ICC2") -> ICC:
    """An ICC of an (n targets x k raters) matrix of stages, with its F-based 95 % interval and p-value."""
    x = np.asarray(ratings, dtype=np.float64)
    if form not in ICC_FORMS:
        raise ValueError(f"form must be one of {', '.join(ICC_FORMS)}; got {form!r}.")
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"expected an (n targets x k raters) matrix with n >= 2 and k >= 2; got shape {x.shape}.")
    if np.isnan(x).any():
        raise ValueError("every target must be rated by every rater: the matrix holds missing values.")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_total = ((x - grand) ** 2).sum()
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
    msw = (ss_total - ss_rows) / (n * (k - 1))
    if msr == 0 and (mse == 0 or msw == 0):
        raise ValueError("the ICC is undefined: every rating is the same.")
    df1, df_error = n - 1, (n - 1) * (k - 1)
    if form in ("ICC1", "ICC1k", "ICC3", "ICC3k"):
        # One-way (error: within targets) and two-way mixed (error: residual) share one form in F = MSR / MS_error.
        error, df2 = (msw, n * (k - 1)) if form.startswith("ICC1") else (mse, df_error)
        f = msr / error
        bounds = np.array([f, f / stats.f.ppf(0.975, df1, df2), f * stats.f.ppf(0.975, df2, df1)])
        value, low, high = 1 - 1 / bounds if form.endswith("k") else (bounds - 1) / (bounds + k - 1)
        return ICC(form, float(value), float(low), float(high), float(f), df1, df2, float(stats.f.sf(f, df1, df2)))
    f = msr / mse
    p = float(stats.f.sf(f, df1, df_error))
    single = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    # Satterthwaite's degrees of freedom for the two-way random form (McGraw and Wong 1996).
    fj = msc / mse
    v = (df_error * (k * single * fj + n * (1 + (k - 1) * single) - k * single) ** 2) / (
        df1 * k**2 * single**2 * fj**2 + (n * (1 + (k - 1) * single) - k * single) ** 2
    )
    f_high, f_low = stats.f.ppf(0.975, df1, v), stats.f.ppf(0.975, v, df1)
    low = n * (msr - f_high * mse) / (f_high * (k * msc + (k * n - k - n) * mse) + n * msr)
    high = n * (f_low * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_low * msr)
    if form == "ICC2k":
        value = (msr - mse) / (msr + (msc - mse) / n)
        low, high = low * k / (1 + low * (k - 1)), high * k / (1 + high * (k - 1))
    else:
        value = single
    return ICC(form, float(value), float(low), float(high), float(f), df1, df_error, p)


def cicchetti(value: float) -> str:
    """Cicchetti's (1994) label of an ICC or kappa: poor < 0.40 <= fair < 0.60 <= good < 0.75 <= excellent."""
    return "poor" if value < 0.40 else "fair" if value < 0.60 else "good" if value < 0.75 else "excellent"


def venn_counts(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> dict[str, int]:
    """Joints by which of three raters agree: all three, only one pair (each named), or none."""
    a, b, c = (np.asarray(x) for x in (a, b, c))
    if not (a.shape == b.shape == c.shape) or a.ndim != 1:
        raise ValueError(f"expected three 1-D arrays of one length; got shapes {a.shape}, {b.shape}, {c.shape}.")
    if a.size == 0:
        raise ValueError("no joint rated by all three raters.")
    ab, ac, bc = a == b, a == c, b == c
    every = ab & ac
    return {
        "all": int(every.sum()),
        "only_ab": int((ab & ~every).sum()),
        "only_ac": int((ac & ~every).sum()),
        "only_bc": int((bc & ~every).sum()),
        "none": int((~ab & ~ac & ~bc).sum()),
    }
