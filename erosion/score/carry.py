"""Carrying scores over from an earlier run: a joint whose image and model are unchanged is not scored again.

Every score row holds a ``fingerprint`` of its joint: 16 bytes of BLAKE2b over the joint_id and the encoded
image. A nightly run made with the same model version as an earlier run looks each registry row's
fingerprint up among that run's successfully scored rows; a match takes the earlier prediction (the model
is deterministic, so scoring again would give the same) and skips decoding and the model. Rows that failed
earlier are tried again: a fix of the decoder or of the registry then takes effect. A new model version
carries nothing over.

A registry file that is unchanged since that run (the same size, version and footer: ``storage.snapshot``) and
whose rows were all scored then (``complete_files``) is not read at all: its rows are copied from that run's
scores (``copy``), found by their ``source_file``; the lookup is loaded only where some file must be read.

The lookup is a sorted array of the fingerprints' first 8 bytes (binary search, vectorised), their full
16 bytes and their scores (six calibrated probabilities, the CDF head's %, the spread over fold models, the
model's own stage, in-sample, the crop's statistics): about 88 bytes a joint, shared through Ray's object
store. Columns that scores written by earlier versions lack read as NaN.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from erosion.core import schema
from erosion.core.domain import NUM_STAGES
from erosion.core.schema import (
    PREDICTION_PCT,
    PREDICTION_PROBS,
    SCORE_CROP,
    SCORE_IN_SAMPLE,
    SCORE_SPREAD,
    SCORE_STAGE,
    SCORE_WIDTH,
)
from erosion.io import storage

SIZE = 16  # bytes of a fingerprint


def fingerprints(joint_ids: list[str | None], images: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16) uint8 fingerprints of (joint_id, image) and a mask of the rows that have one (both present)."""
    prints = np.zeros((len(joint_ids), SIZE), dtype=np.uint8)
    present = np.zeros(len(joint_ids), dtype=bool)
    for i, (joint_id, image) in enumerate(zip(joint_ids, images, strict=True)):
        if joint_id is not None and image is not None:
            digest = hashlib.blake2b(joint_id.encode() + b"\0" + image, digest_size=SIZE).digest()
            prints[i] = np.frombuffer(digest, dtype=np.uint8)
            present[i] = True
    return prints, present


@dataclass(frozen=True)
class Carry:
    """The scored rows of an earlier run, searchable by fingerprint."""

    keys: np.ndarray  # (M,) uint64, sorted: the fingerprints' first 8 bytes
    prints: np.ndarray  # (M, 16) uint8, in the order of keys
    predictions: np.ndarray  # (M, SCORE_WIDTH) float32, in the order of keys (``schema.SCORE_WIDTH``)

    @classmethod
    def of(cls, prints: np.ndarray, predictions: np.ndarray) -> Carry:
        """The lookup of these fingerprints and their predictions."""
        keys = _keys(prints)
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], prints[order], predictions[order])

    def find(self, prints: np.ndarray) -> np.ndarray:
        """For each fingerprint, the index of its earlier row, or -1 where the joint or its image is new."""
        if not len(self.keys) or not len(prints):
            return np.full(len(prints), -1)
        position = np.minimum(np.searchsorted(self.keys, _keys(prints)), len(self.keys) - 1)
        same = (self.prints[position] == prints).all(axis=1)
        return np.where(same, position, -1)


def load(scores: str, options: storage.StorageOptions | None = None) -> Carry:
    """The lookup of a committed run's successfully scored rows (its ``scores/`` table)."""
    present = storage.common_columns(
        scores, options
    )  # older scores lack the CDF head's %, the spread and in_sample: NaN
    optional = {"erosion_pct_pred": PREDICTION_PCT, "stage_spread": SCORE_SPREAD, "in_sample": SCORE_IN_SAMPLE}
    columns = ["fingerprint", "probs", "ratingen_pred", "error"] + [c for c in [*optional, "crop"] if c in present]
    prints, predictions = [], []
    for _, _, batch in storage.iter_batches(scores, columns, 65_536, options):
        batch = batch.filter(pc.and_(pc.is_null(batch["error"]), pc.is_valid(batch["fingerprint"])))
        prints.append(fixed_binary_view(batch["fingerprint"], SIZE))
        values = np.full((batch.num_rows, SCORE_WIDTH), np.nan, np.float32)
        values[:, PREDICTION_PROBS] = batch["probs"].flatten().to_numpy().reshape(-1, NUM_STAGES)
        values[:, SCORE_STAGE] = batch["ratingen_pred"].to_numpy(zero_copy_only=False)
        for name, column in optional.items():
            if name in present:
                values[:, column] = pc.cast(batch[name], pa.float32()).to_numpy(zero_copy_only=False)
        if "crop" in present:
            values[:, SCORE_CROP] = schema.crop_values(batch["crop"])
        predictions.append(values)
    if not prints:
        return Carry.of(np.zeros((0, SIZE), np.uint8), np.zeros((0, SCORE_WIDTH), np.float32))
    return Carry.of(np.concatenate(prints), np.concatenate(predictions))


def complete_files(scores: str, options: storage.StorageOptions | None = None) -> dict[str, int]:
    """Registry file -> rows, for the files all of whose rows a committed run scored without an error (two small
    columns of its scores read; {} for scores older than ``source_file``)."""
    if "source_file" not in storage.common_columns(scores, options):
        return {}
    rows, failed = collections.Counter(), collections.Counter()
    for _, _, batch in storage.iter_batches(scores, ["source_file", "error"], 65_536, options):
        _count(rows, batch["source_file"])
        _count(failed, batch["source_file"].filter(pc.is_valid(batch["error"])))
    return {file: n for file, n in rows.items() if file is not None and not failed[file]}


def copy(scores: str, files: set[str], run_id: str, out: str, options: storage.StorageOptions | None = None) -> int:
    """Copy the rows of ``files`` from an earlier run's scores into ``out`` as this run's carried rows, without
    reading any image; returns the rows copied."""
    wanted = pa.array(sorted(files), pa.string())
    stored = storage.common_columns(scores, options)  # read once: one footer read per file
    present = [name for name in schema.SCORES.names if name in stored]
    with storage.TableWriter(out, schema.SCORES, 100_000, options, row_group_rows=65_536, prefix="carried") as writer:
        for _, _, batch in storage.iter_batches(scores, present, 65_536, options):
            rows = pa.Table.from_batches([batch]).filter(pc.is_in(batch["source_file"], wanted))
            n = rows.num_rows
            for field in schema.SCORES:  # columns that scores of an earlier version lack: null
                if field.name not in present:
                    rows = rows.append_column(field, pa.nulls(n, field.type))
            rows = rows.select(schema.SCORES.names)
            rows = rows.set_column(rows.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * n, pa.string()))
            writer.write(rows.set_column(rows.schema.get_field_index("carried"), "carried", pa.array([True] * n)))
    return writer.rows


def _count(counter: collections.Counter, values: pa.Array) -> None:
    for item in pc.value_counts(values).to_pylist():
        counter[item["values"]] += item["counts"]


def fixed_binary_view(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """(N, width) uint8 view of a fixed-size binary column (nulls read as whatever bytes they hold)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    return data[array.offset * width : (array.offset + len(array)) * width].reshape(-1, width)


def _keys(prints: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(prints[:, :8]).view("<u8").ravel()
