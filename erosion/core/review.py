"""Which ratings are probably wrong: the model's calibrated probabilities against a rater's stages.

Pure NumPy; the review queue (:mod:`erosion.report.queue`) reads and writes around these rules.

* Score: the expected ordinal distance of the rating from the model's distribution, sum_k p_k |k - y|
  (``power=2``: sum_k p_k (k - y)^2, the distance quadratic kappa weighs disagreements by). A rating the model
  puts all its mass on scores 0; a stage-0 rating of a joint the model is sure is stage 3 scores 3 (or 9).
* Flag: confident learning (Northcutt, Jiang and Chuang 2021). Stage k's threshold t_k is the mean P(stage k)
  over the joints rated k; a joint's confident stage is the most probable of the stages whose probability reaches
  their threshold, and the rating is flagged where a confident stage exists and differs from it.
* Queue: the highest scores first, with no joint type and no rated stage taking more than a share of the places
  while candidates of other strata remain.
"""

from __future__ import annotations

import numpy as np

from erosion.core.domain import NUM_STAGES


def expected_distance(probs: np.ndarray, ratings: np.ndarray, power: int = 1) -> np.ndarray:
    """(N,) sum_k P(stage k) |k - rating|^power for (N, 6) probabilities and (N,) stages."""
    if power not in (1, 2):
        raise ValueError(f"power must be 1 (absolute) or 2 (quadratic), got {power}.")
    distance = np.abs(np.arange(NUM_STAGES)[None, :] - np.asarray(ratings)[:, None]).astype(np.float64)
    return (np.asarray(probs, dtype=np.float64) * distance**power).sum(axis=1)


def stage_thresholds(probs: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """(6,) t_k: the mean P(stage k) over the joints rated k; NaN for a stage nobody was rated."""
    probs, ratings = np.asarray(probs, dtype=np.float64), np.asarray(ratings)
    counts = np.bincount(ratings, minlength=NUM_STAGES).astype(np.float64)
    sums = np.array([probs[ratings == k, k].sum() for k in range(NUM_STAGES)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def confident_stage(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N,) the most probable stage among those whose probability reaches its threshold; -1 where none does.

    A stage without a threshold (nobody rated it) is never confident.
    """
    probs = np.asarray(probs, dtype=np.float64)
    reaches = probs >= np.where(np.isnan(thresholds), np.inf, thresholds)[None, :]
    masked = np.where(reaches, probs, -np.inf)
    return np.where(reaches.any(axis=1), masked.argmax(axis=1), -1)


def flagged(probs: np.ndarray, ratings: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N,) whether confident learning calls the rating an issue: a confident stage that is not the rating."""
    stage = confident_stage(probs, thresholds)
    return (stage >= 0) & (stage != np.asarray(ratings))


def stratified_order(scores: np.ndarray, strata: list[np.ndarray], places: int, max_share: float) -> np.ndarray:
    """Indices of the ``places`` queued items, best first: by score (highest first, ties by position), skipping an
    item while any of its strata (one array of labels per stratification, e.g. joint type and rated stage) is full.

    A stratification's strata hold at most ``floor(max_share * places)`` items each, or as many as its labels
    need to fill the places evenly where that is more (two joint types cannot share 100 places at 30 each). Places
    left over once every stratum is full go to the skipped items by score."""
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must lie in (0, 1], got {max_share}.")
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
    places = min(places, len(order))
    caps = [max(1, int(np.floor(max_share * places)), -(-places // max(len(set(s)), 1))) for s in strata]
    taken: list[int] = []
    skipped: list[int] = []
    counts: list[dict] = [{} for _ in strata]
    for i in order:
        if len(taken) == places:
            break
        labels = [s[i] for s in strata]
        if any(c.get(label, 0) >= cap for c, label, cap in zip(counts, labels, caps, strict=True)):
            skipped.append(int(i))
            continue
        taken.append(int(i))
        for c, label in zip(counts, labels, strict=True):
            c[label] = c.get(label, 0) + 1
    taken += skipped[: places - len(taken)]
    return np.asarray(taken, dtype=np.int64)


def precision_recall(queued: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a queue (indices) against the items known to be wrong (a boolean mask)."""
    wrong = np.asarray(wrong, dtype=bool)
    hits = int(wrong[np.asarray(queued, dtype=np.int64)].sum())
    return hits / max(len(queued), 1), hits / max(int(wrong.sum()), 1)
