"""One rater's stages, read from a ratings table: the labels of training and the references of evaluation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from erosion.core.domain import stage_midpoint_pct
from erosion.io import storage


def rater_stages(ratings: str, rater: str, options: storage.StorageOptions | None = None) -> pa.Table:
    """``joint_id``, ``label`` (the stage, int8) and ``pct`` (the % eroded, float32) of every joint the rater
    scored; streamed, no images. Where the rater gave only a stage, ``pct`` is the middle of its range."""
    parts = []
    for _, _, batch in storage.iter_batches(ratings, ["joint_id", "rater", "erosion_pct", "ratingen"], options=options):
        keep = pc.and_(pc.equal(batch["rater"], rater), pc.is_valid(batch["ratingen"]))
        label = pc.filter(batch["ratingen"], keep)
        given = pc.filter(batch["erosion_pct"], keep).cast(pa.float32())
        midpoint = pa.array(stage_midpoint_pct(label.to_numpy(zero_copy_only=False)).astype(np.float32))
        parts.append(
            pa.table(
                {
                    "joint_id": pc.filter(batch["joint_id"], keep),
                    "label": label.cast(pa.int8()),
                    "pct": pc.coalesce(given, midpoint),
                }
            )
        )
    if not parts:
        return pa.table(
            {"joint_id": pa.array([], pa.string()), "label": pa.array([], pa.int8()), "pct": pa.array([], pa.float32())}
        )
    return pa.concat_tables(parts)
