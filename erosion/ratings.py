"""One rater's stages, read from a ratings table: the labels of training and the references of evaluation."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from erosion import storage


def rater_stages(ratings: str, rater: str, options: storage.StorageOptions | None = None) -> pa.Table:
    """``joint_id`` and ``label`` (the stage, int8) of every joint the rater scored; streamed, no images."""
    parts = []
    for _, _, batch in storage.iter_batches(ratings, ["joint_id", "rater", "ratingen"], options=options):
        keep = pc.and_(pc.equal(batch["rater"], rater), pc.is_valid(batch["ratingen"]))
        parts.append(
            pa.table({"joint_id": pc.filter(batch["joint_id"], keep), "label": pc.filter(batch["ratingen"], keep)})
        )
    if not parts:
        return pa.table({"joint_id": pa.array([], pa.string()), "label": pa.array([], pa.int8())})
    return pa.concat_tables(parts)
