"""Agreement between two raters of Ratingen stages (a rater may be the model): pure functions on arrays.

The accuracies are the paper's: global accuracy, balanced accuracy (the mean of the per-class recall over the
classes present in the reference, as scikit-learn's ``balanced_accuracy_score`` defines it) and +-1 balanced
accuracy (the same, a prediction within one stage of the reference counting as right). They are computed
from a confusion matrix, so that confusion matrices counted on several workers can be summed first.
"""

from __future__ import annotations

import numpy as np

from erosion.domain import NUM_STAGES


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


def _mean_recall(confusion: np.ndarray, within: int) -> float:
    _total(confusion)
    k = confusion.shape[0]
    near = np.abs(np.subtract.outer(np.arange(k), np.arange(k))) <= within
    rows = confusion.sum(axis=1)
    present = rows > 0
    return float(np.mean((confusion * near).sum(axis=1)[present] / rows[present]))


def _total(confusion: np.ndarray) -> int:
    total = int(confusion.sum())
    if total == 0:
        raise ValueError("the confusion matrix is empty: no joint rated by both raters.")
    return total
