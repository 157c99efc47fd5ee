"""The training recipe's rules, as pure functions of the epoch and the history: the learning-rate schedule, which
epochs may become the best checkpoint and by what, and when to stop early.

No Ray and no torch here: Ray Train's workers call these once an epoch, the tests call them directly.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "constant")


def learning_rate(base: float, epoch: int, epochs: int, schedule: str, warmup: int, floor: float) -> float:
    """The learning rate of ``epoch`` (0-based) of ``epochs``.

    ``constant``: ``base`` throughout (the paper's). ``cosine``: a linear warm-up over the first ``warmup`` epochs
    (base / warmup, 2 base / warmup, ...), then half a cosine from ``base`` down to ``floor * base`` at the last
    epoch.
    """
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of {SCHEDULES}.")
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    decay = max(epochs - 1 - warmup, 1)
    progress = min((epoch - warmup) / decay, 1.0)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def eligible(epoch: int, epochs: int, best_after: int) -> bool:
    """Whether ``epoch`` (0-based) may become the best checkpoint: from epoch ``best_after`` on, so that an early,
    degenerate epoch (one that answers a rare stage everywhere can score a high balanced accuracy) cannot win;
    the last epoch always may."""
    return epoch >= min(best_after, epochs - 1)


def smoothed(scores: list[float], window: int) -> list[float]:
    """Each epoch's score as the mean over the ``window`` epochs ending with it (fewer at the start): on a
    validation split with a handful of joints in the rare stages, balanced accuracy jumps from epoch to epoch,
    and one lucky epoch should not pick the model. ``window`` 1: the scores themselves (the paper's rule)."""
    return [sum(scores[max(0, e - window + 1) : e + 1]) / (e + 1 - max(0, e - window + 1)) for e in range(len(scores))]


def selection(scores: list[float], epochs: int, best_after: int, window: int) -> float:
    """The value the last of ``scores`` (each epoch's validation score so far) is ranked by for the best
    checkpoint: its smoothed score where its epoch is eligible, else -1 (below any)."""
    epoch = len(scores) - 1
    return smoothed(scores, window)[-1] if eligible(epoch, epochs, best_after) else -1.0


def should_stop(scores: list[float], epochs: int, best_after: int, patience: int, window: int = 1) -> bool:
    """Early stopping: True when the last ``patience`` eligible epochs have not beaten the best eligible smoothed
    score before them (``scores``: each epoch's validation score so far, in order). ``patience`` 0: never."""
    if patience <= 0:
        return False
    ranked = [(s, e) for e, s in enumerate(smoothed(scores, window)) if eligible(e, epochs, best_after)]
    if not ranked:
        return False
    best_epoch = max(ranked, key=lambda pair: (pair[0], -pair[1]))[1]  # the first epoch of the best score
    return len(scores) - 1 - best_epoch >= patience
