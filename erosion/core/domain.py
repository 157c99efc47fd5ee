"""Domain rules of erosion scoring: Ratingen stages, the joint vocabulary, the Rau score, class weights.

Pure Python and NumPy; the rest of the system (training, scoring, reports) takes these rules from here.
Sources: Rau & Wassenberg 2007 via the thesis (Ratingen table, Rau score) and Rohrbach et al. 2019
(balanced class weights).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

NUM_STAGES = 6
"""Ratingen stages 0..5."""

STAGE_UPPER_PCT = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0)
"""Inclusive upper bound of % eroded surface for each stage: 0 -> 0 %, 1 -> (0, 20], ..., 5 -> (80, 100]."""

BODY_PARTS = ("hand_left", "hand_right", "foot_left", "foot_right")

HAND_JOINTS = tuple(f"pip{i}" for i in range(1, 6)) + tuple(f"mcp{i}" for i in range(1, 6)) + ("wrist",)
FOOT_JOINTS = tuple(f"mtp{i}" for i in range(1, 6))
JOINTS = HAND_JOINTS + FOOT_JOINTS

RAU_JOINTS = 38
"""The Rau score extrapolates the sum of stages to 38 joints, whatever number was scored."""


ALL_JOINTS = "all joints"
"""The name of the subset of every joint in per-subset tables (beside joint types such as MCP and each joint)."""


def joint_type(joint: str) -> str:
    """The joint's type as reports name it: pip3 -> PIP, mcp1 -> MCP, mtp2 -> MTP, wrist -> WRIST."""
    return joint.rstrip("0123456789").upper()


def joints_of(body_part: str) -> tuple[str, ...]:
    """The joints a crop of this body part can show (hands: PIP, MCP, wrist; feet: MTP)."""
    if body_part not in BODY_PARTS:
        raise ValueError(f"body_part must be one of {BODY_PARTS}, got {body_part!r}.")
    return HAND_JOINTS if body_part.startswith("hand") else FOOT_JOINTS


MIRROR_RIGHT = "right"
"""A model's pre-processing ``mirror`` setting: crops of the right side flipped left-right before the model."""


def mirrored(settings: dict, body_part: str | None) -> bool:
    """Whether a crop of ``body_part`` is flipped left-right for a model with these pre-processing settings (its
    card's ``preprocess``): right hands and feet to the left orientation, so that one model learns one anatomy. A
    model from before the setting existed sees every crop as stored."""
    return settings.get("mirror") == MIRROR_RIGHT and str(body_part).endswith("_right")


def joint_problem(body_part: str | None, joint: str | None) -> str | None:
    """Why (body_part, joint) is not a valid pair of the vocabulary, or None when it is."""
    if body_part not in BODY_PARTS:
        return f"unknown body_part {body_part!r}; expected one of {', '.join(BODY_PARTS)}"
    if joint not in JOINTS:
        return f"unknown joint {joint!r}; expected one of {', '.join(JOINTS)}"
    if joint not in joints_of(body_part):
        return f"joint {joint!r} does not belong to body_part {body_part!r}"
    return None


def ratingen_stage(erosion_pct: float | np.ndarray) -> int | np.ndarray:
    """Ratingen stage (0..5) of a % eroded joint surface; works on a scalar or an array.

    0 % is stage 0, (0, 20] stage 1, (20, 40] stage 2, (40, 60] stage 3, (60, 80] stage 4, (80, 100] stage 5.
    """
    pct = np.asarray(erosion_pct, dtype=np.float64)
    bad = ~((pct >= 0.0) & (pct <= 100.0))  # also catches NaN
    if bad.any():
        raise ValueError(f"erosion_pct must lie in [0, 100], got {pct[bad].ravel()[:5].tolist()}.")
    stage = np.ceil(pct / 20.0).astype(np.int8)
    return int(stage) if stage.ndim == 0 else stage


def stage_midpoint_pct(stage: int | np.ndarray) -> float | np.ndarray:
    """The middle of a stage's range of % eroded surface (0, 10, 30, 50, 70, 90): a % for a rating that gave
    only a stage, where a % is needed (training the CDF head)."""
    stages = np.asarray(stage)
    if not np.all((stages >= 0) & (stages < NUM_STAGES)):
        raise ValueError(f"stages must lie in 0-{NUM_STAGES - 1}, got {stages.ravel()[:5].tolist()}.")
    pct = np.where(stages == 0, 0.0, 20.0 * stages - 10.0)
    return float(pct) if pct.ndim == 0 else pct


@dataclass(frozen=True)
class RauScore:
    """The Rau score of one visit and what it rests on."""

    joints_scored: int  # joints with a stage at this visit
    stage_sum: int  # sum of their Ratingen stages
    rau: float | None  # stage_sum * 38 / joints_scored; None when no joint was scored (no score, not 0)
    joints: tuple[str, ...]  # the scored joints, sorted, e.g. "hand_left/mcp2"


def rau_score(stages: Mapping[str, int]) -> RauScore:
    """Rau score of a visit from its joints' Ratingen stages, extrapolated to 38 joints.

    A visit without any scored joint has no Rau score (``rau`` is None): 0 would claim a healthy patient.
    """
    for joint, stage in stages.items():
        _check_stage(stage, where=f" (joint {joint})")
    total = int(sum(stages.values()))
    n = len(stages)
    return RauScore(
        joints_scored=n,
        stage_sum=total,
        rau=rau_from_sum(total, n),
        joints=tuple(sorted(stages)),
    )


def rau_from_sum(stage_sum: float, joints_scored: int) -> float | None:
    """The Rau formula itself: stage_sum * 38 / joints_scored, None for no joints."""
    if joints_scored < 0:
        raise ValueError(f"joints_scored must be >= 0, got {joints_scored}.")
    return None if joints_scored == 0 else stage_sum * RAU_JOINTS / joints_scored


def balanced_class_weights(labels: Iterable[int], num_classes: int = NUM_STAGES) -> np.ndarray:
    """Class weights w_k = N / (K * n_k), scikit-learn's "balanced", for classes 0..num_classes-1.

    K counts the classes present in ``labels``, so the weights of present classes equal
    ``sklearn.utils.class_weight.compute_class_weight("balanced", classes=present, y=labels)``.
    A class absent from ``labels`` gets the largest weight of the present classes: it is at least as
    rare as the rarest one seen, and it keeps a validation loss defined if it shows up there.
    """
    y = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
    if y.size == 0:
        raise ValueError("labels must not be empty.")
    if ((y < 0) | (y >= num_classes)).any():
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}, got {sorted(set(y[(y < 0) | (y >= num_classes)].tolist()))}."
        )
    counts = np.bincount(y.astype(np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = y.size / (present.sum() * counts[present])
    weights[~present] = weights[present].max()
    return weights


def oversampling_factors(labels: np.ndarray, num_classes: int = NUM_STAGES) -> np.ndarray:
    """How many times each class's rows are repeated so that every present class comes to about the most
    frequent one's count: round(n_max / n_k), at least 1 (the thesis's model b; an absent class gets 1)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if counts.sum() == 0:
        raise ValueError("labels must not be empty.")
    factors = np.ones(num_classes, dtype=np.int64)
    present = counts > 0
    factors[present] = np.maximum(np.rint(counts.max() / counts[present]), 1)
    return factors


def _check_stage(stage: int, where: str = "") -> None:
    if not (isinstance(stage, int | np.integer) and 0 <= stage < NUM_STAGES):
        raise ValueError(f"a Ratingen stage must be an integer in 0..{NUM_STAGES - 1}, got {stage!r}{where}.")
