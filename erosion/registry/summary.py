"""A registry at a glance, read through Ray Data: joints, patients, visits, class mix, split sizes.

Ray Data's read tasks stream the key columns (never the images) to the driver, which keeps only counts:
per patient, per visit and per stage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import ray

from erosion.core import domain
from erosion.core.split import FRACTIONS, SPLITS, split_of
from erosion.io import storage


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
    registry: str, ratings: str, rater: str = "registry", seed: int = 0, options: storage.StorageOptions | None = None
) -> Summary:
    """Summarize a registry and one rater's labels."""
    joints_per_patient: Counter[str] = Counter()
    visits: set[tuple[str, object]] = set()
    for batch in _dataset(registry, ["patient_id", "visit_date"], options).iter_batches(batch_format="pyarrow"):
        patients = batch["patient_id"].to_pylist()
        joints_per_patient.update(patients)
        visits.update(zip(patients, batch["visit_date"].to_pylist(), strict=True))
    counts = np.zeros(domain.NUM_STAGES, dtype=np.int64)
    for batch in _dataset(ratings, ["rater", "ratingen"], options).iter_batches(batch_format="pyarrow"):
        stages = pc.filter(batch["ratingen"], pc.equal(batch["rater"], rater)).to_numpy()
        counts += np.bincount(stages.astype(np.int64), minlength=domain.NUM_STAGES)
    split = {p: split_of(p, seed, FRACTIONS) for p in joints_per_patient}
    return Summary(
        joints=sum(joints_per_patient.values()),
        patients=len(joints_per_patient),
        visits=len(visits),
        class_mix=tuple(float(c) for c in counts / max(counts.sum(), 1)),
        rated=int(counts.sum()),
        split_patients={s: sum(v == s for v in split.values()) for s in SPLITS},
        split_joints={s: sum(n for p, n in joints_per_patient.items() if split[p] == s) for s in SPLITS},
    )


def _dataset(url: str, columns: list[str], options: storage.StorageOptions | None) -> ray.data.Dataset:
    fs, _ = storage.arrow_filesystem(url, options)
    return ray.data.read_parquet(storage.parquet_files(url, options), filesystem=fs).select_columns(columns)
