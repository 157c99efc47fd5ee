"""Training on the session's local Ray: learning, the published model, worker failure, stop and resume.

A reduced model (quarter width, 64x64 input) keeps each run to a minute or two on two cores. The registry
has every stage in equal shares: with the source registry's mix a 40-patient validation split holds a handful
of joints of stages 3-5, so balanced accuracy would swing by chance more than a few epochs can learn.
"""

import dataclasses
import signal
import subprocess
import time

import numpy as np
import pytest
import ray
import torch
from conftest import SMALL_MODEL
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.utils.class_weight import compute_class_weight

from erosion.core import domain
from erosion.core.faults import Faults
from erosion.core.split import split_of
from erosion.io import storage
from erosion.model import checkpoint
from erosion.registry import synth
from erosion.registry.preprocess import letterbox_batch
from erosion.train import evaluate, experiments, labelled, recipe, training

pytestmark = pytest.mark.slow  # every test trains on the session's local Ray


@pytest.fixture(scope="module")
def train_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("train-registry"))
    synth.generate(synth.SynthConfig(patients=40, out=out, seed=5, rows_per_file=1000, class_mix=(1 / 6,) * 6))
    return out


def _config(registry: str, out: str, name: str, **changes) -> training.TrainConfig:
    labels = labelled.LabelSet(f"{registry}/registry", f"{registry}/ratings")
    # 32 crops a worker, a short warm-up: a few epochs of this tiny registry must learn
    changes = {"batch_size": 64, "warmup_epochs": 1} | changes
    return training.TrainConfig(data=labels, out=out, name=name, model=SMALL_MODEL, **changes)


def _split(registry: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (right hands mirrored, as training's) and registry-rater stages of one split, read without Ray."""
    rows = storage.read_table(f"{registry}/registry", ["joint_id", "patient_id", "body_part", "image"]).to_pandas()
    ratings = storage.read_table(f"{registry}/ratings").to_pandas()
    stages = ratings[ratings["rater"] == "registry"].set_index("joint_id")["ratingen"]
    rows = rows[rows["patient_id"].map(lambda p: split_of(p, 0)) == split]
    mirror = rows["body_part"].str.endswith("_right").tolist()  # as the trained models see them (mirror: right)
    pixels, errors = letterbox_batch(rows["image"].tolist(), SMALL_MODEL.input_size, mirror)
    assert not any(errors)
    return pixels, stages.loc[rows["joint_id"]].to_numpy()


def _pairs(confusion: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The (reference, predicted) pairs behind a confusion matrix."""
    cm = np.array(confusion)
    reference = np.repeat(np.arange(6), cm.sum(axis=1))
    predicted = np.concatenate([np.repeat(np.arange(6), row) for row in cm])
    return reference, predicted


def test_training_learns_and_publishes_a_model_that_loads_without_ray(ray_local, train_registry, tmp_path):
    epochs = 5
    result = training.train(_config(train_registry, str(tmp_path), "learn", epochs=epochs))
    history = result.card.history
    assert [h["epoch"] for h in history] == list(range(epochs))
    # the best epoch: the highest validation balanced accuracy, averaged over select_window epochs, among the
    # epochs from best_after on (the last always counts), as recipe.eligible says
    train = result.card.train
    eligible = [e for e in range(epochs) if e >= min(train["best_after"], epochs - 1)]
    scores = [h["val_balanced_accuracy"] for h in history]
    means = [np.mean(scores[max(0, e - train["select_window"] + 1) : e + 1]) for e in range(epochs)]
    assert result.card.epoch == max(eligible, key=lambda e: (means[e], -e))
    assert all(h["selection"] == -1.0 for h in history if h["epoch"] not in eligible)
    assert [h["selection"] for h in history if h["epoch"] in eligible] == pytest.approx([means[e] for e in eligible])
    assert all(0 <= h["train_balanced_accuracy"] <= 1 for h in history)
    assert result.card.train["batch_size"] == 64  # all workers together: 32 a worker
    png = storage.filesystem(result.run)[0].cat(f"{result.run}/learning_curve.png")
    assert png.startswith(b"\x89PNG")
    calibrated = result.card.calibration
    assert 0.05 < calibrated["temperature"] < 20 and len(calibrated["shift"]) == 6
    # the loss weighed each stage by scikit-learn's balanced weight to the power 0.5: the shift undoes that
    labels = labelled.split_labels(_config(train_registry, str(tmp_path), "learn").data, "train")
    present = np.unique(labels)
    balanced = compute_class_weight("balanced", classes=present, y=labels) ** train["weight_power"]
    shift = -np.log(balanced) - np.mean(-np.log(balanced))
    assert train["weight_power"] == 0.5 and len(present) == 6  # every stage in equal shares
    np.testing.assert_allclose(calibrated["shift"], shift, rtol=1e-6)
    assert calibrated["rows"] == sum(map(sum, history[result.card.epoch]["val_confusion"]))
    assert calibrated["after"]["nll"] <= calibrated["before"]["nll"] + 0.05
    assert result.card.train["model"] == {
        "input_size": 64,
        "width": 0.25,
        "dropout": 0.5,
        "arch": "cnn",
        "head": "stages",
    }
    assert result.card.preprocess["input_size"] == 64 and result.card.classes == list(range(6))

    # Learning: the last epoch (fixed in advance, so no selection on validation) must beat chance. Chance is a
    # model whose answers do not depend on the crop: its answers shuffled against the labels give the null
    # distribution of balanced accuracy on this very split (about 1/6 +- 0.015 here); the bar is its 99.9th
    # percentile, so a model that learned nothing fails 999 times in 1000.
    reference, predicted = _pairs(history[-1]["val_confusion"])
    achieved = balanced_accuracy_score(reference, predicted)
    assert achieved == pytest.approx(history[-1]["val_balanced_accuracy"])
    rng = np.random.default_rng(0)
    null = [balanced_accuracy_score(reference, rng.permutation(predicted)) for _ in range(2000)]
    bar = float(np.quantile(null, 0.999))
    print(f"last epoch: validation balanced accuracy {achieved:.3f}, chance's 99.9th percentile {bar:.3f}")
    assert achieved > bar

    # The published model, loaded without Ray, gives the validation confusion its epoch reported.
    model, card = checkpoint.load(result.model)
    assert card.model_version == result.card.model_version
    pixels, stages = _split(train_registry, "val")
    with torch.no_grad():
        scores = model(torch.from_numpy(pixels).unsqueeze(1).float() / 255).argmax(1).numpy()
    expected = np.array(history[card.epoch]["val_confusion"])
    assert np.abs(confusion_matrix(stages, scores, labels=range(6)) - expected).sum() <= 0.02 * expected.sum()

    # `erosion evaluate`'s functions give the accuracies scikit-learn gives on this independent re-scoring.
    predicted = evaluate.predict_split(result.model, f"{train_registry}/registry", "val")
    rater = evaluate.rater_reference(f"{train_registry}/ratings", "registry")
    figures, _ = evaluate.compare(predicted, rater)
    assert figures["n"] == len(stages)
    assert figures["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(stages, scores), abs=0.01)
    assert figures["accuracy"] == pytest.approx(np.mean(stages == scores), abs=0.01)


def test_a_worker_that_dies_is_replaced_and_no_epoch_is_lost(ray_local, train_registry, s3_bucket):
    config = _config(train_registry, s3_bucket, "faulty", epochs=3, faults=Faults(fail_at_epoch=1), max_failures=1)
    result = training.train(config)
    history = result.card.history
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert [h["attempt_start_epoch"] for h in history] == [0, 1, 1]  # restarted from epoch 0's checkpoint
    assert all(h["train_rows"] > 0 and h["val_rows"] > 0 for h in history)
    _, card = checkpoint.load(f"{s3_bucket}/faulty")
    assert card == result.card and "faults" not in card.train  # a test hook, never recorded


def test_early_stopping_ends_the_run_at_the_first_epoch_the_rule_says(ray_local, train_registry, tmp_path):
    epochs = 6
    result = training.train(_config(train_registry, str(tmp_path), "early", epochs=epochs, patience=1, best_after=0))
    scores = [h["val_balanced_accuracy"] for h in result.card.history]
    window = result.card.train["select_window"]
    stops = [recipe.should_stop(scores[: n + 1], epochs, 0, 1, window) for n in range(len(scores))]
    assert not any(stops[:-1])  # it went on while the rule said so
    assert stops[-1] or len(scores) == epochs  # and ended where it first said stop (or ran out of epochs)
    rates = [h["learning_rate"] for h in result.card.history]
    assert rates == pytest.approx([recipe.learning_rate(1e-3, e, epochs, "cosine", 1, 0.02) for e in range(len(rates))])


def test_an_oversampled_run_sees_each_stage_repeated_and_the_plain_runs_optimizer_steps(
    ray_local, small_registry, tmp_path
):
    config = _config(small_registry, str(tmp_path), "oversampled", epochs=1, oversample=True, weighted_loss=False)
    labels = labelled.split_labels(config.data, "train")  # the registry's own mix, mostly stage 0
    repeated = int(domain.oversampling_factors(labels)[labels].sum())
    assert repeated > 2 * labels.size
    result = training.train(config)
    assert result.card.history[0]["train_rows"] == repeated  # every copy trained on once, none lost
    assert result.card.train["oversample"] and not result.card.train["weighted_loss"]
    budget = experiments.equal_steps(dataclasses.replace(config, epochs=40))
    assert budget.epochs == round(40 * labels.size / repeated)  # the crops of 40 plain epochs


def test_a_stopped_run_resumes_where_it_stopped(ray_local, train_registry, tmp_path):
    out, name = str(tmp_path), "stopped"
    command = ["erosion", "train", "--registry", f"{train_registry}/registry", "--ratings"]
    command += [
        f"{train_registry}/ratings",
        "--out",
        out,
        "--name",
        name,
        "--epochs",
        "4",
        "--batch-size",
        "64",
        "--warmup-epochs",
        "1",
    ]
    command += ["--input-size", "64", "--width", "0.25", "--address", ray.get_runtime_context().gcs_address]
    command += ["--verbose"]  # the workers' epoch lines, live
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        for line in driver.stdout:
            if "epoch 2/4" in line or time.monotonic() > deadline:
                break
        assert time.monotonic() < deadline, "the first run did not reach epoch 2 in time"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    result = training.train(_config(train_registry, out, name, epochs=4))
    history = result.card.history
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    # The first run reached epoch 2, so at least epoch 0's checkpoint was committed: the second run goes on from
    # the last committed epoch instead of starting over (which epoch that is depends on when the kill landed).
    restarts = sorted({h["attempt_start_epoch"] for h in history})
    assert len(restarts) == 2 and restarts[0] == 0 and restarts[1] >= 1, restarts
