"""A joint's nearest rated neighbours by its embedding, and how far their stages lie from its rating.

Pure NumPy; ``erosion embed`` lists the neighbours and ``erosion review`` ranks by their disagreement. Two joints
are compared only within one embedding space (the model, and for a fold set the fold model, that embedded them:
``schema.embeddings``) and only across patients: a patient's other joints and visits share the crop's look and the
rater's reading of it, so leaving them out keeps the neighbours out of sample (the joint itself is one of them).

Distances are Euclidean on the embeddings, computed exactly by brute force in chunks of queries (about 256 MB of
distances at a time): a registry's 10^4-10^5 rated joints of one space in seconds to minutes.

The disagreement of a rating y with its k neighbours' stages s_1..s_k is their mean |s_i - y|, in stages like
the model's expected distance (``review.expected_distance``): a rating unlike the ratings of the crops that look
like it stands out although the model itself never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from erosion.core.domain import NUM_STAGES

CHUNK_CELLS = 1 << 25  # distances computed at once (float64): 256 MB


@dataclass(frozen=True)
class Points:
    """Embedded joints: (N, D) embeddings, and each one's space and patient (any labels comparable with ==)."""

    embeddings: np.ndarray
    spaces: np.ndarray
    patients: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.embeddings)
        if np.ndim(self.embeddings) != 2 or len(self.spaces) != n or len(self.patients) != n:
            raise ValueError(
                f"Points needs (N, D) embeddings and N spaces and patients, got {np.shape(self.embeddings)},"
                f" {len(self.spaces)} and {len(self.patients)}."
            )


def nearest(queries: Points, references: Points, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, k) indices into ``references`` of each query's k nearest references of its space and of another
    patient, nearest first (ties by index), and (M, k) their distances; -1 and inf where there are fewer."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if queries.embeddings.shape[1:] != references.embeddings.shape[1:]:
        raise ValueError(
            f"queries have width {queries.embeddings.shape[1:]}, references {references.embeddings.shape[1:]}."
        )
    _, coded = np.unique(np.concatenate([queries.patients, references.patients]), return_inverse=True)
    query_patients, reference_patients = coded[: len(queries.patients)], coded[len(queries.patients) :]
    indices = np.full((len(queries.embeddings), k), -1, np.int64)
    distances = np.full((len(queries.embeddings), k), np.inf)
    for space in np.unique(queries.spaces):
        found = np.flatnonzero(references.spaces == space)
        if not len(found):
            continue
        kept = references.embeddings[found].astype(np.float64)
        squares = (kept**2).sum(axis=1)
        rows = np.flatnonzero(queries.spaces == space)
        step = max(1, CHUNK_CELLS // len(found))
        take = min(k, len(found))
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            asked = queries.embeddings[chunk].astype(np.float64)
            squared = (asked**2).sum(axis=1)[:, None] - 2 * asked @ kept.T + squares[None, :]
            squared[query_patients[chunk][:, None] == reference_patients[found][None, :]] = np.inf
            order = np.argsort(squared, axis=1, kind="stable")[:, :take]
            best = np.take_along_axis(squared, order, axis=1)
            indices[chunk, :take] = np.where(np.isfinite(best), found[order], -1)
            distances[chunk, :take] = np.sqrt(np.maximum(best, 0))
    return indices, distances


def neighbour_stages(indices: np.ndarray, stages: np.ndarray) -> np.ndarray:
    """(M, k) the references' stages at ``indices`` (from :func:`nearest`); -1 where there is no neighbour."""
    stages = np.asarray(stages, dtype=np.int64)
    return np.where(indices >= 0, stages[np.maximum(indices, 0)] if len(stages) else -1, -1)


def stage_mix(stages: np.ndarray) -> np.ndarray:
    """(M, 6) the share of each stage among each row's neighbours (:func:`neighbour_stages`); NaN without any."""
    counts = np.stack([(stages == s).sum(axis=1) for s in range(NUM_STAGES)], axis=1).astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return counts / total


def disagreement(stages: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """(M,) the mean |neighbour stage - rating| over each row's neighbours (:func:`neighbour_stages`); NaN without
    any."""
    present = stages >= 0
    gaps = np.where(present, np.abs(stages - np.asarray(ratings, dtype=np.int64)[:, None]), 0)
    with np.errstate(invalid="ignore"):
        return gaps.sum(axis=1) / present.sum(axis=1)
