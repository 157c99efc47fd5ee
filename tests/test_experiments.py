"""The experiments on a real local Ray: variants trained on one split, judged with and without test-time
augmentation against every rater and the truth, every figure recomputable with scikit-learn."""

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_MODEL
from sklearn import metrics

from erosion.cli.main import main
from erosion.model import augment, checkpoint
from erosion.model.network import ModelConfig
from erosion.train import evaluate, experiments, labelled, training


def test_each_variant_differs_from_the_base_in_what_it_studies_only():
    base = training.TrainConfig(data=labelled.LabelSet("registry", "ratings"), out="out", epochs=3, model=SMALL_MODEL)
    runs = experiments.variants("all", experiments.ExperimentConfig(base=base, vgg16_input_size=32))
    assert list(runs) == ["unweighted", "weighted", "cdf", "vgg16"]
    runs |= experiments.variants("loss", experiments.ExperimentConfig(base=base))
    differences = {
        name: {f.name for f in dataclasses.fields(base) if getattr(run, f.name) != getattr(base, f.name)} - {"name"}
        for name, run in runs.items()
    }
    assert differences == {
        "unweighted": {"weighted_loss"},
        "oversampled": {"weighted_loss", "oversample"},  # the thesis's model b: plain loss on oversampled data
        "weighted": {"weight_power"},  # the paper's balanced weights (power 1), whatever the recipe's default
        "cdf": {"model", "weighted_loss"},  # the thesis's regression: plain CRPS
        "vgg16": {"model"},
    }
    assert runs["weighted"].weight_power == 1.0
    assert runs["cdf"].model == dataclasses.replace(base.model, head="cdf")
    assert runs["vgg16"].model == ModelConfig(input_size=32, arch="vgg16")
    assert list(experiments.variants("loss", experiments.ExperimentConfig(base=base))) == [
        "unweighted",
        "oversampled",
        "weighted",
    ]
    assert list(experiments.variants("head", experiments.ExperimentConfig(base=base))) == ["weighted", "cdf"]
    described = experiments.describe(runs["vgg16"])
    assert described.startswith("vgg16 32 px, stages head, cross-entropy, class-weighted, random start")


FIGURES = (("accuracy", "accuracy"), ("balanced", "balanced_accuracy"))  # as evaluate prints them, in order


@pytest.fixture(scope="module")
def experiment(ray_local, small_registry, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("experiment"))
    command = ["experiment", "head", "--registry", f"{small_registry}/registry", "--ratings"]
    command += [f"{small_registry}/ratings", "--truth", f"{small_registry}/truth", "--out", out]
    command += ["--epochs", "1", "--batch-size", "32", "--input-size", "64", "--width", "0.25", "--tta", "2"]
    assert main(command) == 0
    return out


@pytest.mark.slow
def test_the_classifier_and_the_cdf_head_are_trained_alike_but_for_the_head_and_its_loss(experiment):
    cards = {name: checkpoint.read_card(f"{experiment}/{name}") for name in ("weighted", "cdf")}
    assert cards["weighted"].model.head == "stages" and cards["cdf"].model.head == "cdf"
    for key in ("epochs", "seed", "batch_size", "learning_rate"):
        assert cards["weighted"].train[key] == cards["cdf"].train[key], key
    assert cards["weighted"].train["weighted_loss"] and not cards["cdf"].train["weighted_loss"]
    assert "val_pct_mae" in cards["cdf"].history[-1] and "val_pct_mae" not in cards["weighted"].history[-1]


@pytest.mark.slow
def test_the_table_holds_every_variant_view_split_and_reference_with_recomputable_figures(experiment, small_registry):
    table = pd.read_parquet(f"{experiment}/table.parquet")
    confusion = pd.read_parquet(f"{experiment}/confusion.parquet")
    references = {"rater registry", "rater rescorer_1", "rater rescorer_2", "ground truth"}
    assert set(table["reference"]) == references
    assert len(table) == 2 * 2 * 2 * len(references)  # variants x (plain, 2 views) x splits x references
    truth = evaluate.truth_reference(f"{small_registry}/truth")
    views = {0: None, 2: augment.views(2, seed=0)}
    for row in table[table["reference"] == "ground truth"].itertuples():
        model = f"{experiment}/{row.variant}"
        predicted = evaluate.predict_split(model, f"{small_registry}/registry", row.split, views=views[row.tta])
        a, b = truth.loc[predicted.index, "stage"].to_numpy(), predicted["stage"].to_numpy()
        assert row.n == len(a) > 0
        assert row.accuracy == pytest.approx(metrics.accuracy_score(a, b), abs=1e-9)
        assert row.balanced_accuracy == pytest.approx(metrics.balanced_accuracy_score(a, b), abs=1e-9)
        if row.kappa == row.kappa:
            assert row.kappa == pytest.approx(
                metrics.cohen_kappa_score(a, b, labels=range(6), weights="quadratic"), abs=1e-9
            )
        if row.variant == "cdf":
            error = metrics.mean_absolute_error(truth.loc[predicted.index, "pct"], predicted["pct"])
            assert row.pct_mae == pytest.approx(error, abs=1e-4)
        else:
            assert np.isnan(row.pct_mae)
        label = row.variant + (f" tta{row.tta}" if row.tta else "")
        cells = confusion[(confusion["subset"] == row.split) & (confusion["rater"] == label)]
        cells = cells[cells["reference"] == "ground truth"]
        counts = np.zeros((6, 6), int)
        counts[cells["reference_stage"], cells["rater_stage"]] = cells["count"]
        np.testing.assert_array_equal(counts, metrics.confusion_matrix(a, b, labels=range(6)))
    rated = table[table["n"] > 0]  # a re-scorer may have rated no joint of a split
    for s in ("accuracy", "balanced_accuracy", "pm1_balanced_accuracy"):
        assert (rated[f"{s}_low"] <= rated[s]).all() and (rated[s] <= rated[f"{s}_high"]).all()
    written = open(f"{experiment}/table.md").read()
    assert "| cdf | 2 views | test | ground truth |" in written and "- cdf: cnn 64 px, width 0.25, CDF head" in written
    assert len(os.listdir(f"{experiment}/figures")) == 2 * 2 * 2 * len(references)  # a plot per row's pair


@pytest.mark.slow
def test_evaluate_prints_the_cdf_heads_figures_as_the_experiment_table_has_them(experiment, small_registry, capsys):
    command = ["evaluate", "--model", f"{experiment}/cdf", "--registry", f"{small_registry}/registry"]
    command += ["--ratings", f"{small_registry}/ratings", "--truth", f"{small_registry}/truth", "--split", "test"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    table = pd.read_parquet(f"{experiment}/table.parquet")
    row = table.query("variant == 'cdf' and tta == 0 and split == 'test' and reference == 'ground truth'").iloc[0]
    shown = [(label, getattr(row, s), getattr(row, s + "_low"), getattr(row, s + "_high")) for label, s in FIGURES]
    figures = ", ".join(f"{label} {value:.3f} [{low:.3f}, {high:.3f}]" for label, value, low, high in shown)
    assert f"vs ground truth: n {row.n}, {figures}" in printed
    assert f"% MAE {row.pct_mae:.1f}" in printed
