"""Accuracies of a trained model on one split, against a rater's stages and, for a synthetic registry, the truth.

A plain process (no Ray): the split's crops stream file by file through the shared pre-processing and the
model; only (joint_id, predicted stage) pairs are kept. Each reference is a ratings table (one rater's rows)
or a truth table (``erosion synth`` writes ``truth/``, the stages the crops were drawn with).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from erosion import agreement, checkpoint, storage
from erosion.model import probabilities
from erosion.preprocess import letterbox_batch
from erosion.ratings import rater_stages
from erosion.split import split_of


@dataclass(frozen=True)
class Accuracies:
    """The paper's three accuracies of the model against one reference, on n joints."""

    reference: str
    n: int
    accuracy: float
    balanced_accuracy: float
    pm1_balanced_accuracy: float


def predict_split(
    model_url: str, registry: str, split: str, split_seed: int = 0, options: storage.StorageOptions | None = None
) -> pd.Series:
    """The model's stage for every decodable joint of a split, indexed by joint_id."""
    model, card = checkpoint.load(model_url, options=options)
    ids, stages = [], []
    for _, _, batch in storage.iter_batches(registry, ["joint_id", "patient_id", "image"], 256, options):
        keep = pc.equal(pa.array([split_of(p, split_seed) for p in batch["patient_id"].to_pylist()]), split)
        batch = batch.filter(keep)
        pixels, errors = letterbox_batch(batch["image"].to_pylist(), card.model.input_size)
        ok = np.array([e is None for e in errors], dtype=bool)
        ids += [j for j, good in zip(batch["joint_id"].to_pylist(), ok, strict=True) if good]
        stages.append(probabilities(model, pixels[ok]).argmax(1))
    return pd.Series(np.concatenate(stages) if stages else [], index=ids, dtype=np.int64)


def accuracies(predicted: pd.Series, reference: pd.Series, name: str) -> Accuracies:
    """The model's accuracies against the joints the reference stages (indexed by joint_id) share with it."""
    common = predicted.index.intersection(reference.index)
    confusion = agreement.confusion_matrix(reference.loc[common].to_numpy(), predicted.loc[common].to_numpy())
    return Accuracies(
        reference=name,
        n=int(confusion.sum()),
        accuracy=agreement.global_accuracy(confusion),
        balanced_accuracy=agreement.balanced_accuracy(confusion),
        pm1_balanced_accuracy=agreement.pm1_balanced_accuracy(confusion),
    )


def rater_series(ratings: str, rater: str, options: storage.StorageOptions | None = None) -> pd.Series:
    """One rater's stages by joint_id."""
    table = rater_stages(ratings, rater, options).to_pandas()
    return table.set_index("joint_id")["label"].astype(np.int64)


def truth_stages(truth: str, options: storage.StorageOptions | None = None) -> pd.Series:
    """The true stages by joint_id, from a synthetic registry's truth table."""
    return storage.read_table(truth, ["joint_id", "ratingen"], options).to_pandas().set_index("joint_id")["ratingen"]
