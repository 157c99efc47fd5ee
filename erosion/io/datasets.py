"""Ray Data readers of the registry's Parquet tables (local or ``s3://``)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from erosion.io import storage

# CPUs reserved by each read, decode and lookup task: small, so that on a 2-core machine they fit beside the
# training workers; Ray Data's backpressure, not the reservation, keeps their number in check.
TASK_CPUS = 0.25

BLOCK_BYTES = 16 * 2**20
"""Ray Data's block size in the scoring pipeline (its default is 128 MiB): a read task hands on, and a decode task
holds, about 2,000 crops of today's 8 kB at a time whatever the size of a registry file, so that a worker's
memory does not grow with the files and the model actors get work while the first file is still being read."""

TASK_BYTES = 4 * BLOCK_BYTES
"""A read task reads consecutive row groups of one file up to about this many bytes (a larger row group on its own):
about 7,500 of today's crops, more than a second of decode on one core, whatever row groups the registry was written
in (erosion's own writer: 1,024 rows, about 9 MB), since every task costs its scheduling. Measured, 10^5 crops in 20
files: 3,512 crops/s through the scoring pipeline as one task per 1,024-row group, 4,023 as one task per file."""


def read(
    url: str,
    columns: list[str],
    options: storage.StorageOptions | None = None,
    files: list[str] | None = None,
    block_bytes: int = BLOCK_BYTES,
    cpus: float = TASK_CPUS,
    task_bytes: int = TASK_BYTES,
) -> ray.data.Dataset:
    """A Parquet table (local or ``s3://``) as a Ray Data dataset of ``columns`` (of ``files`` only, if given),
    with each row's file in a ``path`` column where ``columns`` asks for it.

    One read task per run of consecutive row groups of a file of about ``task_bytes`` (``runs``), planned on the
    driver from the files' footers: no listing task and no footer pass in the cluster; each task reads nothing but
    its row groups' ``columns``, ``block_bytes`` at a time, and blocks are of about ``block_bytes``, here and in the
    steps after it. Each read task reserves ``cpus``."""
    fs, _ = storage.filesystem(url, options)
    parts = []
    for file, meta in storage.footers(url, options, files).items():
        groups = _row_groups(meta)
        for indices in runs(groups, task_bytes):
            count, size = sum(groups[i][0] for i in indices), sum(groups[i][1] for i in indices)
            parts.append(Part(file, indices, count, size))
    source = RowGroups(fs, parts, columns, block_bytes)
    rows = ray.data.read_datasource(source, num_cpus=cpus, override_num_blocks=max(len(parts), 1))
    rows.context.target_max_block_size = block_bytes  # this plan's context (and its steps'), not the process's
    return rows


def runs(groups: list[tuple[int, int]], task_bytes: int) -> list[list[int]]:
    """A file's row groups (their (rows, bytes), in order) as runs of consecutive indices, each of at most
    ``task_bytes`` but where one row group alone is larger: the row groups each read task reads."""
    planned: list[list[int]] = []
    size = 0
    for index, (_, nbytes) in enumerate(groups):
        if planned and size + nbytes <= task_bytes:
            planned[-1].append(index)
            size += nbytes
        else:
            planned.append([index])
            size = nbytes
    return planned


@dataclass(frozen=True)
class Part:
    """What one read task reads: a run of consecutive row groups of one file (``runs``), their rows and bytes."""

    file: str
    indices: list[int]
    rows: int
    bytes: int


class RowGroups(Datasource):
    """Parquet files' row groups in ``parts``, one read task each."""

    def __init__(self, fs, parts: list[Part], columns: list[str], block_bytes: int) -> None:
        super().__init__()
        self.fs, self.parts, self.columns, self.block_bytes = fs, parts, columns, block_bytes

    def estimate_inmemory_data_size(self) -> int:
        return sum(part.bytes for part in self.parts)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list:
        tasks = []
        for part in self.parts:
            batch = max(1, self.block_bytes * part.rows // max(part.bytes, 1))
            read = functools.partial(_read_row_groups, self.fs, part.file, part.indices, self.columns, batch)
            metadata = BlockMetadata(
                num_rows=part.rows, size_bytes=part.bytes, input_files=[part.file], exec_stats=None
            )
            tasks.append(ReadTask(read, metadata, per_task_row_limit=per_task_row_limit))
        return tasks

    def get_name(self) -> str:
        return "ReadRowGroups"


def _row_groups(meta: pq.FileMetaData) -> list[tuple[int, int]]:
    return [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]


def _read_row_groups(fs, file: str, indices: list[int], columns: list[str], batch: int) -> Iterator[pa.Table]:
    """Row groups ``indices`` of ``file`` as tables of ``batch`` rows, with a ``path`` column if ``columns`` has
    one."""
    stored = [c for c in columns if c != "path"]
    with fs.open(file, "rb") as f:
        for part in pq.ParquetFile(f).iter_batches(batch_size=batch, row_groups=indices, columns=stored):
            table = pa.Table.from_batches([part])
            if "path" in columns:
                table = table.append_column("path", pa.array([file] * table.num_rows, pa.string()))
            yield table.select(columns)
    pa.default_memory_pool().release_unused()  # the row groups' buffers back to the system, not kept per worker
