"""Ray Data readers of the registry's Parquet tables (local or ``s3://``)."""

from __future__ import annotations

import ray

from erosion.io import storage

# CPUs reserved by each read, decode and lookup task: small, so that on a 2-core machine they fit beside the
# training workers; Ray Data's backpressure, not the reservation, keeps their number in check.
TASK_CPUS = 0.25


def read(url: str, columns: list[str], options: storage.StorageOptions | None = None) -> ray.data.Dataset:
    """A Parquet table (local or ``s3://``) as a Ray Data dataset of ``columns``."""
    fs, _ = storage.arrow_filesystem(url, options)
    files = storage.parquet_files(url, options)
    return ray.data.read_parquet(files, filesystem=fs, num_cpus=TASK_CPUS).select_columns(columns)
