"""Calibrated stage probabilities: a prior correction for the class weights, then temperature scaling.

A model trained with class weights w_k learns probabilities proportional to w_k P(k | x): the weighting shifts the
class prior they imply, and no temperature can undo a shift. So the calibrated probabilities are
``softmax(log p / T - log w)``: the temperature T (one scalar, fitted by the negative log-likelihood on held-out
joints) sharpens or softens, the shift ``-log w`` (the class weights, known, not fitted) restores the prior of the
labels. Pure NumPy, SciPy only to fit (imported there: a scoring actor, which only applies, starts without it):
the training driver fits, the scoring actors apply, the tests check.
"""

from __future__ import annotations

import numpy as np

BINS = 15
"""Equal-width bins of the top-label expected calibration error."""

_TINY = 1e-12


def apply(probs: np.ndarray, temperature: float, shift: np.ndarray) -> np.ndarray:
    """(N, K) probabilities -> calibrated (N, K): ``softmax(log probs / temperature + shift)``."""
    logits = np.log(np.clip(probs, _TINY, 1.0)) / temperature + np.asarray(shift)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def prior_shift(class_weights: list[float] | None, classes: int) -> np.ndarray:
    """``-log w_k``, centred (only differences matter); zeros for a model trained without weights."""
    if not class_weights:
        return np.zeros(classes)
    shift = -np.log(np.asarray(class_weights, dtype=np.float64))
    return shift - shift.mean()


def fit_temperature(probs: np.ndarray, labels: np.ndarray, shift: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``labels`` under ``apply(probs, T, shift)`` (T in [0.05, 20])."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: nll(apply(probs, float(np.exp(log_t)), shift), labels),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _TINY, 1.0))))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: the mean over joints of sum_k (p_k - [k = label])^2."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label reliability in equal-width bins of the top probability: (count, mean confidence, accuracy) per
    bin (NaN where a bin is empty). Bins are (a, b], the first [0, b]."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=bins) / count
        accuracy = np.bincount(index, correct, minlength=bins) / count
    return count, mean_confidence, accuracy


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Top-label ECE: sum over bins of (share of joints) x |accuracy - mean confidence|."""
    count, confidence, accuracy = reliability(probs, labels, bins)
    filled = count > 0
    return float(np.sum(count[filled] / count.sum() * np.abs(accuracy[filled] - confidence[filled])))


def summary(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, NLL and Brier score of probabilities against labels."""
    return {"ece": expected_calibration_error(probs, labels), "nll": nll(probs, labels), "brier": brier(probs, labels)}
