"""Train / validation / test split by patient, 70/20/10, as in Rohrbach et al. 2019.

A patient's split is a pure function of the seed and the patient key: a keyed hash maps the key to a
number in [0, 1) and the fractions cut that interval. So the same patient lands in the same split on any
machine, in any row order, and when the registry grows (new patients never move old ones); a patient is
never cut in two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SPLITS = ("train", "val", "test")
FRACTIONS = (0.7, 0.2, 0.1)


def patient_unit(patient_id: str, seed: int | str) -> float:
    """The patient's position in [0, 1): the first 8 bytes of BLAKE2b(seed, patient_id) over 2**64."""
    digest = hashlib.blake2b(patient_id.encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(patient_id: str, seed: int, fractions: tuple[float, float, float] = FRACTIONS) -> str:
    """The split ("train", "val" or "test") of one patient."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}.")
    u = patient_unit(patient_id, seed)
    if u < fractions[0]:
        return SPLITS[0]
    return SPLITS[1] if u < fractions[0] + fractions[1] else SPLITS[2]


def assign_splits(
    patient_ids: Iterable[str], seed: int, fractions: tuple[float, float, float] = FRACTIONS
) -> dict[str, str]:
    """The split of every distinct patient in ``patient_ids``."""
    return {p: split_of(p, seed, fractions) for p in set(patient_ids)}


def fold_of(patient_id: str, seed: int, folds: int) -> int:
    """The patient's cross-fitting fold, 0..folds-1: the same keyed hash as the split, under another key
    (``<seed>/folds``), so that folds and splits are independent of each other."""
    return min(int(patient_unit(patient_id, f"{seed}/folds") * folds), folds - 1)


def member(patient_id: str, split: str, seed: int, folds: int = 0, held_out: int = -1) -> bool:
    """Whether a patient belongs to ``split`` of a training run's data. Without folds: the patient's split. With
    ``folds`` and the fold ``held_out``: never for a patient of that fold; otherwise ``val`` is the patients of
    the validation split and ``train`` every other patient (the test split trains too: the held-out fold is what
    tests a cross-fitted model)."""
    if folds:
        if fold_of(patient_id, seed, folds) == held_out:
            return False
        in_val = split_of(patient_id, seed) == "val"
        return in_val if split == "val" else split == "train" and not in_val
    return split_of(patient_id, seed) == split
