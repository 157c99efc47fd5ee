"""Scoring's decode step as Ray Data CPU tasks: ``decoding.decode_batch`` with an earlier run's lookup.

The workers import neither torch nor the model (see ``decoding``); the carry-over lookup is fetched from the
object store once per worker process.
"""

from __future__ import annotations

import functools

import pyarrow as pa
import ray

from erosion.score import decoding


def scoring_crops(
    rows: ray.data.Dataset,
    input_size: int,
    coverage: dict[str, dict],
    cpus: float = 1.0,
    crash_once: str | None = None,
    carry: ray.ObjectRef | None = None,
) -> ray.data.Dataset:
    """Scoring's decode step in CPU tasks of ``cpus`` each (``decoding.decode_batch``; no torch in these workers):
    keys, ``pixels``, ``error``, ``fingerprint`` and ``carried`` (an earlier run's scores, from ``carry``'s
    lookup); ``coverage``: what the run's models may score (``models.Models.coverage``). A whole block of ``rows``
    (``datasets.BLOCK_BYTES``) per call: with no batch size, Ray Data fuses the decode into the read tasks
    (``datasets.read``'s runs of row groups), no task hand-over (each a pause of 0.15-0.25 s on 2 cores) between read
    and decode. A call holds the block's decoded pixels: about 2,000 crops of today's 8 kB, 2,000 * size^2 bytes
    (45 MB at 150 px); smaller encoded crops make more rows a block."""
    return rows.map_batches(
        _scoring_decode,
        fn_kwargs={"size": input_size, "coverage": coverage, "crash_once": crash_once, "carry": carry},
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=cpus,
    )


def _scoring_decode(
    batch: pa.Table, size: int, coverage: dict[str, dict], crash_once: str | None, carry: ray.ObjectRef | None
) -> pa.Table:
    return decoding.decode_batch(batch, size, coverage, crash_once, None if carry is None else _lookup(carry))


@functools.lru_cache(maxsize=1)
def _lookup(carry: ray.ObjectRef):
    """An earlier run's lookup, fetched once per worker process and run (zero-copy from the object store)."""
    return ray.get(carry)
