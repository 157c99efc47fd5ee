"""Scoring's optional second table: each freshly scored crop's penultimate-layer embedding (``--embeddings``).

The model actors append two columns to their score rows (``attach``): the embedding (float16, null where the row
failed or was carried over) and the fold model that made it. One pass of Ray Data writes both tables from those
rows (``Sink``): each write task puts its rows, in the scores contract, into ``scores/`` and those with an
embedding into ``embeddings/`` (``schema.embeddings``), under one file name per task, so that a retried task
overwrites its own files and no row is lost or doubled. The default run (no embeddings) never comes here: its
scores are written by Ray Data's own Parquet writer, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from erosion.core import schema
from erosion.io import storage
from erosion.model import models
from erosion.model.network import embedding_width


def width(chosen: models.Models) -> int:
    """The embedding width of the run's models; ValueError where they differ (one table holds one width)."""
    widths = {embedding_width(card.model) for card in chosen.cards.values()}
    if len(widths) > 1:
        raise ValueError(f"--embeddings needs models of one embedding width, got {sorted(widths)}: score them apart.")
    return widths.pop()


def attach(rows: pa.Table, embedded: np.ndarray, folds: np.ndarray, fresh: np.ndarray) -> pa.Table:
    """Score rows with their (N, width) float16 embeddings and folds, null where not ``fresh`` (failed, carried)."""
    column = pa.FixedSizeListArray.from_arrays(pa.array(embedded.ravel()), embedded.shape[1], mask=pa.array(~fresh))
    return rows.append_column("fold", pa.array(folds.astype(np.int8), mask=~fresh)).append_column("embedding", column)


def empty(url: str, width: int, options: storage.StorageOptions | None = None) -> None:
    """An empty file of the embeddings table: the table exists where no row was embedded (all carried, none read)."""
    storage.write_table(f"{url}/part-empty.parquet", schema.embeddings(width).empty_table(), options)


class Sink(Datasink[int]):
    """Writes rows from ``attach`` as the run's scores and embeddings; each write task returns its rows."""

    def __init__(self, scores: str, embeddings: str, width: int, options: storage.StorageOptions) -> None:
        self.scores, self.embeddings, self.options = scores, embeddings, options
        self.schema = schema.embeddings(width)

    def write(self, blocks: Iterable[Block], ctx) -> int:
        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        rows = pa.concat_tables(tables) if tables else None
        if rows is None or not rows.num_rows:
            return 0
        name = f"part-{ctx.task_idx:06d}.parquet"  # a retried task writes the same names: its rows once
        storage.write_table(f"{self.scores}/{name}", rows.select(schema.SCORES.names), self.options)
        embedded = rows.filter(pc.is_valid(rows["embedding"])).select(self.schema.names).cast(self.schema)
        storage.write_table(f"{self.embeddings}/{name}", embedded, self.options)
        return rows.num_rows
