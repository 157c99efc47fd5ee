"""How a trained model does on one split, against a rater's stages and, for a synthetic registry, the truth.

A plain process (no Ray): the split's crops stream file by file through the shared pre-processing and the
model (optionally with test-time augmentation); only (joint_id, predicted stage, predicted %) are kept. Each
reference is a ratings table (one rater's rows) or a truth table (``erosion synth`` writes ``truth/``, the stages
and % the crops were drawn with). Both sides are frames indexed by joint_id with a ``stage`` and a ``pct``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from erosion.core import agreement
from erosion.core.domain import mirrored
from erosion.core.schema import PREDICTION_PCT, PREDICTION_PROBS, PREDICTION_WIDTH
from erosion.core.settings import setting
from erosion.core.split import SPLITS, member
from erosion.io import storage
from erosion.io.ratings import rater_stages
from erosion.model import calibration, checkpoint
from erosion.model.network import for_inference, predict
from erosion.registry.preprocess import letterbox_batch


@dataclass(frozen=True)
class EvaluateConfig:
    """Which model, on which split, against whom."""

    model: str = setting("a training run's folder or its model/")
    registry: str = setting("the registry table")
    ratings: str = setting("the ratings table")
    rater: str = setting("whose stages the model is compared with", "registry")
    truth: str = setting("a synthetic registry's truth/ table, to compare with too", "")
    split: str = setting("the patient split", "val", choices=SPLITS)
    split_seed: int = setting("the seed of the patient split", 0)
    body_parts: tuple[str, ...] = setting(
        "the body parts whose joints are evaluated (default: those the model's card names; another's, e.g. a hand"
        " model on feet, is an experiment that scoring refuses)",
        (),
    )
    options: storage.StorageOptions = setting("S3 settings", factory=storage.StorageOptions)


def evaluate(config: EvaluateConfig) -> tuple[int, dict[str, dict]]:
    """The number of crops scored, and the accuracies (``compare``) against the rater and the truth, by name."""
    predicted = predict_split(
        config.model, config.registry, config.split, config.split_seed, config.options, body_parts=config.body_parts
    )
    references = {f"rater {config.rater}": rater_reference(config.ratings, config.rater, config.options)}
    if config.truth:
        references["ground truth"] = truth_reference(config.truth, config.options)
    return len(predicted), {name: compare(predicted, reference)[0] for name, reference in references.items()}


def predict_split(
    model_url: str,
    registry: str,
    split: str,
    split_seed: int = 0,
    options: storage.StorageOptions | None = None,
    views: torch.Tensor | None = None,
    body_parts: tuple[str, ...] = (),
) -> pd.DataFrame:
    """The model's ``stage`` and ``pct`` (NaN for the stages head) for every decodable joint of a split, by joint_id.

    ``views``: test-time augmentation, as in scoring (``augment.views``); ``body_parts``: whose joints (default: the
    ones the model's card names).
    """
    model, card = checkpoint.load(model_url, options=options)
    parts = tuple(body_parts) or tuple(card.body_parts)
    ids, rows = split_predictions(
        model, checkpoint.prepared(card), registry, split, split_seed, options, views, body_parts=parts
    )
    return pd.DataFrame(
        {
            "stage": rows[:, PREDICTION_PROBS].argmax(1).astype(np.int64),
            "pct": rows[:, PREDICTION_PCT].astype(np.float64),
        },
        index=pd.Index(ids, name="joint_id"),
    )


def split_predictions(
    model: torch.nn.Module,
    preprocess: dict,
    registry: str,
    split: str,
    split_seed: int = 0,
    options: storage.StorageOptions | None = None,
    views: torch.Tensor | None = None,
    folds: int = 0,
    held_out: int = -1,
    body_parts: tuple[str, ...] = ("hand_left", "hand_right"),
) -> tuple[list[str], np.ndarray]:
    """The joint ids of a split's decodable crops of ``body_parts`` (``split.member``: of a cross-fitting run's data,
    with ``folds`` and ``held_out``) and the predictions of the model with these pre-processing settings (its card's
    ``preprocess``: size, mirroring) of them (``network.predict``)."""
    model = for_inference(model)
    ids, predictions = [], []
    parts = pa.array(body_parts, pa.string())
    for _, _, batch in storage.iter_batches(registry, ["joint_id", "patient_id", "body_part", "image"], 256, options):
        inside = [member(p, split, split_seed, folds, held_out) for p in batch["patient_id"].to_pylist()]
        batch = batch.filter(pc.and_(pa.array(inside, pa.bool_()), pc.is_in(batch["body_part"], parts)))
        mirror = [mirrored(preprocess, part) for part in batch["body_part"].to_pylist()]
        pixels, errors = letterbox_batch(batch["image"].to_pylist(), preprocess["input_size"], mirror)
        ok = np.array([e is None for e in errors], dtype=bool)
        ids += [j for j, good in zip(batch["joint_id"].to_pylist(), ok, strict=True) if good]
        predictions.append(predict(model, pixels[ok], views))
    return ids, np.concatenate(predictions) if predictions else np.zeros((0, PREDICTION_WIDTH), np.float32)


def fit_calibration(
    model: torch.nn.Module,
    preprocess: dict,
    labels: pd.DataFrame,
    registry: str,
    class_weights: list[float] | None,
    split_seed: int = 0,
    options: storage.StorageOptions | None = None,
    folds: int = 0,
    held_out: int = -1,
    body_parts: tuple[str, ...] = ("hand_left", "hand_right"),
) -> dict:
    """The calibration of a trained model (``calibration``), fitted on the validation split's joints of
    ``body_parts`` against ``labels`` (a rater's stages, ``rater_reference``): the prior shift of its class weights
    and the temperature, with ECE, NLL, Brier score and the reliability bins before and after."""
    ids, rows = split_predictions(
        model, preprocess, registry, "val", split_seed, options, None, folds, held_out, body_parts
    )
    known = labels.index.get_indexer(pd.Index(ids))
    probs = rows[known >= 0][:, PREDICTION_PROBS].astype(np.float64)
    stages = labels["stage"].to_numpy()[known[known >= 0]].astype(np.int64)
    shift = calibration.prior_shift(class_weights, probs.shape[1])
    temperature = calibration.fit_temperature(probs, stages, shift)
    calibrated = calibration.apply(probs, temperature, shift)
    return {
        "temperature": temperature,
        "shift": shift.tolist(),
        "fitted_on": "validation split",
        "rows": len(stages),
        "before": calibration.summary(probs, stages) | _bins(probs, stages),
        "after": calibration.summary(calibrated, stages) | _bins(calibrated, stages),
    }


def _bins(probs: np.ndarray, labels: np.ndarray) -> dict:
    count, confidence, accuracy = calibration.reliability(probs, labels)
    as_list = lambda values: [None if np.isnan(v) else float(v) for v in values]  # noqa: E731
    return {
        "bin_count": count.astype(int).tolist(),
        "bin_confidence": as_list(confidence),
        "bin_accuracy": as_list(accuracy),
    }


def compare(predicted: pd.DataFrame, reference: pd.DataFrame) -> tuple[dict, np.ndarray]:
    """The model against a reference on the joints both have: table columns (n, the three accuracies and quadratic
    kappa with 95 % intervals, ``pct_mae``: the mean absolute error of the predicted %, NaN without one) and
    the confusion matrix (rows: the reference's stages)."""
    common = predicted.index.intersection(reference.index)
    both = np.column_stack([reference.loc[common, "stage"], predicted.loc[common, "stage"]]).astype(np.int64)
    error = (predicted.loc[common, "pct"] - reference.loc[common, "pct"]).abs().dropna()
    confusion = agreement.confusion_matrix(*both.T)
    columns = {"n": len(common)} | agreement.pair_statistics(confusion)
    columns["pct_mae"] = float(error.mean()) if len(error) else np.nan
    return columns, confusion


def rater_reference(ratings: str, rater: str, options: storage.StorageOptions | None = None) -> pd.DataFrame:
    """One rater's ``stage`` and ``pct`` by joint_id (``pct``: the stage's midpoint where only a stage was given)."""
    table = rater_stages(ratings, rater, options).to_pandas().drop_duplicates("joint_id", keep="last")
    frame = table.set_index("joint_id").rename(columns={"label": "stage"})
    return frame.astype({"stage": np.int64, "pct": np.float64})


def truth_reference(truth: str, options: storage.StorageOptions | None = None) -> pd.DataFrame:
    """The true ``stage`` and ``pct`` by joint_id, from a synthetic registry's truth table."""
    table = storage.read_table(truth, ["joint_id", "ratingen", "erosion_pct"], options).to_pandas()
    frame = table.set_index("joint_id").rename(columns={"ratingen": "stage", "erosion_pct": "pct"})
    return frame.astype({"stage": np.int64, "pct": np.float64})


def raters(ratings: str, options: storage.StorageOptions | None = None) -> list[str]:
    """Every rater of a ratings table, in order of appearance (reads only the rater column)."""
    names: dict[str, None] = {}
    for _, _, batch in storage.iter_batches(ratings, ["rater"], 65_536, options):
        names |= dict.fromkeys(pc.unique(batch["rater"]).to_pylist())
    return list(names)
