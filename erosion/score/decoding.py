"""Scoring's decode step: check each registry row, letterbox its crop, hand the pixels on as fixed-size binary.

Runs in Ray Data CPU tasks, so it imports neither torch nor Ray: a decode worker stays small (importing torch
alone costs about 480 MB of resident memory per process). A row that cannot be scored gets an ``error``
("<reason>: <detail>") instead of an exception, so that every row goes on to the output.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from erosion.core import domain, schema
from erosion.core.schema import SCORE_WIDTH
from erosion.registry.preprocess import letterbox_measured
from erosion.score.carry import SIZE, Carry, fingerprints, fixed_binary_view


def decode_batch(
    batch: pa.Table, size: int, coverage: dict[str, dict], crash_once: str | None = None, carry: Carry | None = None
) -> pa.Table:
    """The batch's key columns, ``pixels`` (fixed-size binary of size * size uint8), ``error``, ``fingerprint``,
    ``carried`` (an earlier run's predictions where ``carry`` knows the fingerprint, else null) and
    ``source_file`` (the batch's ``path`` column, where the read included it) and ``crop`` (the statistics of each
    crop decoded, ``schema.CROP``'s fields in order; NaN where none was decoded).

    ``coverage`` (``models.Models.coverage``): the joints each body part's model may score, and whether its crops
    are mirrored. A carried row is not decoded. ``crash_once`` is for tests: a marker file; the first task to find it
    missing creates it and its worker dies, as a worker lost mid-task would.
    """
    if crash_once and not os.path.exists(crash_once):
        open(crash_once, "w").close()
        os._exit(1)
    keys = [batch[k].to_pylist() for k in ("joint_id", "patient_id", "visit_date", "body_part", "joint")]
    images = batch["image"].to_pylist()
    prints, present = fingerprints(keys[0], images)
    found = carry.find(prints) if carry is not None else np.full(batch.num_rows, -1)
    pixels = np.zeros((batch.num_rows, size, size), dtype=np.uint8)
    measured = np.full((batch.num_rows, len(schema.CROP)), np.nan, dtype=np.float32)
    errors: list[str | None] = []
    for i, data in enumerate(images):
        error = row_problem(*(column[i] for column in keys), coverage)
        if error is None and found[i] < 0:
            try:
                pixels[i], measured[i] = letterbox_measured(data or b"", size, coverage[keys[3][i]]["mirror"])
            except ValueError as problem:
                error = str(problem)
        errors.append(error)
    carried = np.zeros((batch.num_rows, SCORE_WIDTH), dtype=np.float32)
    is_carried = (found >= 0) & np.array([e is None for e in errors], dtype=bool)
    if is_carried.any():
        carried[is_carried] = carry.predictions[found[is_carried]]
    source = batch["path"] if "path" in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    return (
        batch.select(schema.KEYS)
        .append_column("pixels", _fixed_binary(pixels, size * size))
        .append_column("error", pa.array(errors, pa.string()))
        .append_column("fingerprint", _fixed_binary(prints, SIZE, mask=~present))
        .append_column(
            "carried",
            pa.FixedSizeListArray.from_arrays(pa.array(carried.ravel()), SCORE_WIDTH, mask=pa.array(~is_carried)),
        )
        .append_column("source_file", source)
        .append_column("crop", pa.FixedSizeListArray.from_arrays(pa.array(measured.ravel()), len(schema.CROP)))
    )


def _fixed_binary(values: np.ndarray, width: int, mask: np.ndarray | None = None) -> pa.Array:
    validity = None if mask is None else pa.array(~mask).buffers()[1]
    count = 0 if mask is None else int(mask.sum())
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(values), [validity, pa.py_buffer(values)], null_count=count
    )


def row_problem(joint_id, patient_id, visit_date, body_part, joint, coverage: dict[str, dict]) -> str | None:
    """Why a registry row cannot be scored whatever its image, as "<reason>: <detail>"; None when it can
    (``coverage``: what the run's models may score)."""
    for name, value in (("joint_id", joint_id), ("patient_id", patient_id), ("visit_date", visit_date)):
        if value is None:
            return f"missing key: {name} is null"
    problem = domain.joint_problem(body_part, joint)
    if problem is not None:
        return f"invalid joint: {problem}"
    if body_part not in coverage:
        return f"no model for body part: {body_part}"
    if joint not in coverage[body_part]["joints"]:
        scored = ", ".join(coverage[body_part]["joints"])
        return f"no model for joint: {joint} of {body_part} (its model scores {scored})"
    return None


def pixel_view(column: pa.ChunkedArray | pa.Array, size: int) -> np.ndarray:
    """(N, size, size) uint8 view of a fixed-size binary column of pixels, without copying where possible."""
    return fixed_binary_view(column, size * size).reshape(-1, size, size)
