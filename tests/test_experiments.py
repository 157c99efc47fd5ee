"""The loss experiment (the paper's Table 2) on a real local Ray: two runs, one split, every figure recomputable."""

import os

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from erosion import checkpoint, cli, evaluate


@pytest.fixture(scope="module")
def experiment(ray_local, small_registry, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("experiment"))
    command = [
        "experiment",
        "loss",
        "--registry",
        f"{small_registry}/registry",
        "--ratings",
        f"{small_registry}/ratings",
    ]
    command += ["--truth", f"{small_registry}/truth", "--out", out, "--epochs", "1", "--batch-size", "32"]
    assert cli.main(command + ["--input-size", "64", "--width", "0.25"]) == 0
    return out


def test_both_variants_are_trained_alike_but_for_the_loss(experiment):
    cards = {name: checkpoint.read_card(f"{experiment}/{name}") for name in ("unweighted", "weighted")}
    assert not cards["unweighted"].train["weighted_loss"] and cards["weighted"].train["weighted_loss"]
    for key in ("epochs", "seed", "batch_size", "learning_rate"):
        assert cards["unweighted"].train[key] == cards["weighted"].train[key], key
    assert cards["unweighted"].model == cards["weighted"].model


def test_the_table_holds_every_variant_split_and_reference_with_recomputable_figures(experiment, small_registry):
    table = pd.read_parquet(f"{experiment}/table.parquet")
    confusion = pd.read_parquet(f"{experiment}/confusion.parquet")
    assert len(table) == 8  # 2 variants x val, test x rater, ground truth
    assert set(table["reference"]) == {"rater registry", "ground truth"}
    truth = evaluate.truth_stages(f"{small_registry}/truth")
    for row in table[table["reference"] == "ground truth"].itertuples():
        predicted = evaluate.predict_split(f"{experiment}/{row.variant}", f"{small_registry}/registry", row.split)
        a, b = truth.loc[predicted.index].to_numpy(), predicted.to_numpy()
        assert row.n == len(a) > 0
        assert row.accuracy == pytest.approx(metrics.accuracy_score(a, b), abs=1e-9)
        assert row.balanced_accuracy == pytest.approx(metrics.balanced_accuracy_score(a, b), abs=1e-9)
        cells = confusion[(confusion["subset"] == row.split) & (confusion["rater"] == row.variant)]
        cells = cells[cells["reference"] == "ground truth"]
        counts = np.zeros((6, 6), int)
        counts[cells["reference_stage"], cells["rater_stage"]] = cells["count"]
        np.testing.assert_array_equal(counts, metrics.confusion_matrix(a, b, labels=range(6)))
    for s in ("accuracy", "balanced_accuracy", "pm1_balanced_accuracy"):
        assert (table[f"{s}_low"] <= table[s]).all() and (table[s] <= table[f"{s}_high"]).all()
    assert "| weighted | test | ground truth |" in open(f"{experiment}/table.md").read()
    assert len(os.listdir(f"{experiment}/figures")) == 8  # a confusion plot per variant, split and reference
