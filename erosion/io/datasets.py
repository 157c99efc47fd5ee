"""Ray Data readers of the registry's Parquet tables (local or ``s3://``)."""

from __future__ import annotations

import ray

from erosion.io import storage

# CPUs reserved by each read, decode and lookup task: small, so that on a 2-core machine they fit beside the
# training workers; Ray Data's backpressure, not the reservation, keeps their number in check.
TASK_CPUS = 0.25


def read(
    url: str,
    columns: list[str],
    options: storage.StorageOptions | None = None,
    files: list[str] | None = None,
) -> ray.data.Dataset:
    """A Parquet table (local or ``s3://``) as a Ray Data dataset of ``columns`` (of ``files`` only, if given),
    with each row's file in a ``path`` column where ``columns`` asks for it."""
    fs, _ = storage.arrow_filesystem(url, options)
    files = storage.parquet_files(url, options) if files is None else files
    paths = "path" in columns
    rows = ray.data.read_parquet(files, filesystem=fs, num_cpus=TASK_CPUS, include_paths=paths)
    return rows.select_columns(columns)
