"""A registry at a glance, computed with Ray Data: joints, patients, visits, class mix, split sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray

from erosion import domain, storage
from erosion.split import FRACTIONS, SPLITS, split_of


@dataclass(frozen=True)
class Summary:
    """Counts that tell a data team whether a registry looks as expected."""

    joints: int
    patients: int
    visits: int  # distinct (patient, visit date)
    class_mix: tuple[float, ...]  # share of the rater's joints per stage 0..5
    rated: int  # joints the rater scored
    split_patients: dict[str, int]
    split_joints: dict[str, int]


def summarize(
    registry: str,
    ratings: str,
    rater: str = "registry",
    seed: int = 0,
    options: storage.StorageOptions | None = None,
) -> Summary:
    """Summarize a registry and one rater's labels; streams through Ray Data, never loads the images."""
    per_patient = _dataset(registry, ["patient_id"], options).groupby("patient_id").count().to_pandas()
    visits = (
        _dataset(registry, ["patient_id", "visit_date"], options).groupby(["patient_id", "visit_date"]).count().count()
    )
    stages = (
        _dataset(ratings, ["rater", "ratingen"], options)
        .filter(lambda row: row["rater"] == rater)
        .groupby("ratingen")
        .count()
        .to_pandas()
    )
    counts = np.zeros(domain.NUM_STAGES)
    counts[stages["ratingen"].to_numpy(dtype=int)] = stages["count()"].to_numpy()
    split = per_patient["patient_id"].map(lambda p: split_of(p, seed, FRACTIONS))
    return Summary(
        joints=int(per_patient["count()"].sum()),
        patients=len(per_patient),
        visits=int(visits),
        class_mix=tuple(float(c) for c in counts / max(counts.sum(), 1)),
        rated=int(counts.sum()),
        split_patients={s: int((split == s).sum()) for s in SPLITS},
        split_joints={s: int(per_patient.loc[split == s, "count()"].sum()) for s in SPLITS},
    )


def _dataset(url: str, columns: list[str], options: storage.StorageOptions | None) -> ray.data.Dataset:
    fs, _ = storage.arrow_filesystem(url, options)
    return ray.data.read_parquet(storage.parquet_files(url, options), filesystem=fs, columns=columns)
