"""The naive scorer the benchmark measures Ray against: one process, no Ray, decode and model in turn.

``python -m erosion.workflows.naive REGISTRY MODEL ROWS`` scores the first ROWS crops and prints the loop's
crops per second (after the imports and the model load, which the benchmark times around the process).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import torch

from erosion.io import heap, storage
from erosion.model import checkpoint
from erosion.model.network import for_inference, predict
from erosion.registry.preprocess import letterbox


class Crops(torch.utils.data.IterableDataset):
    """One Parquet batch after another, each crop decoded on its own; crops that do not decode are skipped."""

    def __init__(self, registry: str, size: int, rows: int) -> None:
        self.registry, self.size, self.rows = registry, size, rows

    def __iter__(self) -> Iterator[torch.Tensor]:
        left = self.rows
        for _, _, batch in storage.iter_batches(self.registry, ["image"], 256):
            for data in batch["image"].to_pylist()[:left]:
                try:
                    yield torch.from_numpy(letterbox(data, self.size))
                except ValueError:
                    continue
            left -= min(left, batch.num_rows)
            if not left:
                return


def score(registry: str, model_url: str, rows: int) -> float:
    """Crops per second of a DataLoader (no worker processes) that decodes, then ``network.predict`` (as in the
    model actors, with the same malloc settings), batch after batch."""
    heap.keep_freed_memory()
    model, card = checkpoint.load(model_url)
    model = for_inference(model)
    loader = torch.utils.data.DataLoader(Crops(registry, card.preprocess["input_size"], rows), batch_size=256)
    began, count = time.perf_counter(), 0
    for batch in loader:
        predict(model, batch.numpy())
        count += len(batch)
    return count / (time.perf_counter() - began)


if __name__ == "__main__":
    print(score(sys.argv[1], sys.argv[2], int(sys.argv[3])))
