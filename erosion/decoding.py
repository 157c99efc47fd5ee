"""Scoring's decode step: check each registry row, letterbox its crop, hand the pixels on as fixed-size binary.

Runs in Ray Data CPU tasks, so it imports neither torch nor Ray: a decode worker stays small (importing torch
alone costs about 480 MB of resident memory per process). A row that cannot be scored gets an ``error``
("<reason>: <detail>") instead of an exception, so that every row goes on to the output.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from erosion import domain, schema
from erosion.preprocess import letterbox


def decode_batch(batch: pa.Table, size: int, crash_once: str | None = None) -> pa.Table:
    """The batch's key columns, ``pixels`` (fixed-size binary of size * size uint8) and ``error``.

    ``crash_once`` is for tests: a marker file; the first task to find it missing creates it and its worker
    dies, as a worker lost mid-task would.
    """
    if crash_once and not os.path.exists(crash_once):
        open(crash_once, "w").close()
        os._exit(1)
    keys = [batch[k].to_pylist() for k in ("joint_id", "patient_id", "visit_date", "body_part", "joint")]
    pixels = np.zeros((batch.num_rows, size, size), dtype=np.uint8)
    errors: list[str | None] = []
    for i, data in enumerate(batch["image"].to_pylist()):
        error = row_problem(*(column[i] for column in keys))
        if error is None:
            try:
                pixels[i] = letterbox(data or b"", size)
            except ValueError as problem:
                error = str(problem)
        errors.append(error)
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(size * size), batch.num_rows, [None, pa.py_buffer(pixels)])
    return (
        batch.select(schema.KEYS).append_column("pixels", column).append_column("error", pa.array(errors, pa.string()))
    )


def row_problem(joint_id, patient_id, visit_date, body_part, joint) -> str | None:
    """Why a registry row cannot be scored whatever its image, as "<reason>: <detail>"; None when it can."""
    for name, value in (("joint_id", joint_id), ("patient_id", patient_id), ("visit_date", visit_date)):
        if value is None:
            return f"missing key: {name} is null"
    problem = domain.joint_problem(body_part, joint)
    return None if problem is None else f"invalid joint: {problem}"


def pixel_view(column: pa.ChunkedArray | pa.Array, size: int) -> np.ndarray:
    """(N, size, size) uint8 view of a fixed-size binary column of pixels, without copying where possible."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    pixels = size * size
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    return data[array.offset * pixels : (array.offset + len(array)) * pixels].reshape(-1, size, size)
