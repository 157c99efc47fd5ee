"""Ray Data views of the labelled, decoded splits that training streams.

A labelled split is built lazily, and every epoch streams it anew: read the registry's key columns and
images -> keep the rows of the split's patients -> add one rater's stage (rows the rater did not score
are left out) -> decode and letterbox in CPU tasks. The rater's stages (keys and one byte a joint, never
images) are read once by the driver and shared through the object store; each worker process indexes them
once. The images never gather in one process.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray

from erosion.core.domain import mirrored
from erosion.core.settings import setting
from erosion.core.split import member
from erosion.io import storage
from erosion.io.datasets import TASK_CPUS, read
from erosion.io.ratings import rater_stages
from erosion.registry.preprocess import letterbox_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSet:
    """Which registry, whose labels and which split: the data side of a training run."""

    registry: str = setting("the registry table (local folder or s3:// URL)")
    ratings: str = setting("the ratings table")
    rater: str = setting("whose stages are the labels", "registry")
    body_parts: tuple[str, ...] = setting(
        "the body parts whose joints it learns (comma-separated; feet: foot_left,foot_right)",
        ("hand_left", "hand_right"),
    )
    split_seed: int = setting("the seed of the patient split (train / val / test)", 0)
    folds: int = setting("cross-fitting: the patients' folds (0: none)", 0, cli=False)
    held_out: int = setting("cross-fitting: the fold this run never sees", -1, cli=False)
    options: storage.StorageOptions = setting("S3 settings", factory=storage.StorageOptions)


def labelled_split(labels: LabelSet, split: str, columns: tuple[str, ...] = ("joint_id", "image")) -> ray.data.Dataset:
    """The registry rows of one split's patients and of the label set's body parts that the rater scored:
    ``columns`` plus ``label`` (the stage, int8) and ``pct`` (the % eroded, float32; see ``ratings.rater_stages``)."""
    rows = read(labels.registry, sorted({"joint_id", "patient_id", "body_part", *columns}), labels.options)
    return rows.map_batches(
        _label_split,
        fn_kwargs={
            "split": split,
            "seed": labels.split_seed,
            "folds": labels.folds,
            "held_out": labels.held_out,
            "body_parts": labels.body_parts,
            "stages": ray.put(rater_stages(labels.ratings, labels.rater, labels.options)),
            "columns": columns,
        },
        batch_format="pyarrow",
        num_cpus=TASK_CPUS,
    )


def decoded(rows: ray.data.Dataset, preprocess: dict) -> ray.data.Dataset:
    """Letterboxed uint8 ``pixels`` (N, S, S) as a model with these pre-processing settings sees them (right crops
    mirrored where they say so; ``rows`` need ``body_part``), int64 ``label`` and float32 ``pct``; a crop that
    fails to decode is logged and left out."""
    return rows.map_batches(_decode, fn_kwargs={"preprocess": preprocess}, batch_format="pyarrow", num_cpus=TASK_CPUS)


def oversampled(rows: ray.data.Dataset, factors: list[int], seed: int) -> ray.data.Dataset:
    """Each row of stage k repeated ``factors[k]`` times, then the whole set shuffled (seeded) so that the copies
    of one crop spread over the epoch instead of filling a few batches; each copy is augmented anew in training."""
    repeated = rows.map_batches(_repeat, fn_kwargs={"factors": factors}, batch_format="pyarrow", num_cpus=TASK_CPUS)
    return repeated.random_shuffle(seed=seed)


def split_labels(labels: LabelSet, split: str) -> np.ndarray:
    """Every stage of a split's labelled rows (one byte a joint, no images), streamed to the driver."""
    rows = labelled_split(labels, split, columns=("joint_id",))
    parts = [batch["label"].to_numpy() for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int8)


def rated_patients(labels: LabelSet) -> list[str]:
    """Every patient with a joint of the label set's body parts that the rater scored, sorted."""
    return _rated(labels, "patient_id")


def rated_joints(labels: LabelSet) -> list[str]:
    """Every joint name (``mcp2``, ``mtp1``) of the label set's body parts that the rater scored, sorted."""
    return _rated(labels, "joint")


def _rated(labels: LabelSet, column: str) -> list[str]:
    """The values of a registry key ``column`` over the rated joints of the body parts (keys only, no image)."""
    rated = rater_stages(labels.ratings, labels.rater, labels.options)["joint_id"]
    parts = pa.array(labels.body_parts, pa.string())
    values: set[str] = set()
    for _, _, batch in storage.iter_batches(labels.registry, ["joint_id", "body_part", column], 65_536, labels.options):
        keep = pc.and_(pc.is_in(batch["joint_id"], rated), pc.is_in(batch["body_part"], parts))
        values.update(pc.filter(batch[column], keep).to_pylist())
    return sorted(v for v in values if v is not None)


def _label_split(
    batch: pa.Table,
    split: str,
    seed: int,
    folds: int,
    held_out: int,
    body_parts: tuple[str, ...],
    stages: ray.ObjectRef,
    columns: tuple[str, ...],
) -> pa.Table:
    inside = {p: member(p, split, seed, folds, held_out) for p in set(batch["patient_id"].to_pylist())}
    keep = [inside[p] for p in batch["patient_id"].to_pylist()]
    batch = batch.filter(pc.and_(pa.array(keep, pa.bool_()), pc.is_in(batch["body_part"], pa.array(body_parts))))
    index, labels, pct = _stage_index(stages)
    position = index.get_indexer(batch["joint_id"].to_numpy(zero_copy_only=False))
    rated = position >= 0
    rows = batch.select(list(columns)).filter(pa.array(rated))
    return rows.append_column("label", pa.array(labels[position[rated]])).append_column(
        "pct", pa.array(pct[position[rated]])
    )


def _repeat(batch: pa.Table, factors: list[int]) -> pa.Table:
    return batch.take(np.repeat(np.arange(batch.num_rows), np.asarray(factors)[batch["label"].to_numpy()]))


@functools.lru_cache(maxsize=1)
def _stage_index(stages: ray.ObjectRef) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """A hash index of the rater's stages and %, built once per worker process and run (the last duplicate wins)."""
    table = ray.get(stages)
    index = pd.Index(table["joint_id"].to_numpy(zero_copy_only=False), dtype=object)
    unique = ~index.duplicated(keep="last")
    labels = table["label"].to_numpy()[unique].astype(np.int8)
    return index[unique], labels, table["pct"].to_numpy()[unique].astype(np.float32)


def _decode(batch: pa.Table, preprocess: dict) -> dict[str, np.ndarray]:
    mirror = [mirrored(preprocess, part) for part in batch["body_part"].to_pylist()]
    pixels, errors = letterbox_batch(batch["image"].to_pylist(), preprocess["input_size"], mirror)
    ok = np.array([e is None for e in errors], dtype=bool)
    for joint_id, error in zip(batch["joint_id"].to_pylist(), errors, strict=True):
        if error is not None:
            log.warning("left out of training: %s: %s", joint_id, error)
    labels = batch["label"].to_numpy().astype(np.int64)[ok]
    return {"pixels": pixels[ok], "label": labels, "pct": batch["pct"].to_numpy().astype(np.float32)[ok]}
