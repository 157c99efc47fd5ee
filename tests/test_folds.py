"""Cross-fitting: folds of patients, fold models trained on the session's local Ray, and a fold set's scores, each
joint scored by the fold model that never saw its patient, a new patient's by the mean over them."""

import dataclasses
import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_MODEL
from sklearn.metrics import balanced_accuracy_score

from erosion.core import schema
from erosion.core.domain import mirrored
from erosion.core.split import SPLITS, fold_of, member, split_of
from erosion.io import runs, storage
from erosion.model import calibration, checkpoint
from erosion.model.network import for_inference, predict_embedded, probabilities
from erosion.registry import synth
from erosion.registry.preprocess import letterbox
from erosion.report import cam, report
from erosion.score import scoring
from erosion.train import labelled, training

PATIENTS = [f"p{i}" for i in range(3000)]


def test_folds_are_balanced_and_independent_of_the_split():
    folds = np.array([fold_of(p, 0, 3) for p in PATIENTS])
    assert set(folds) == {0, 1, 2} and np.bincount(folds).min() > 900
    splits = np.array([split_of(p, 0) for p in PATIENTS])
    for fold in range(3):  # each fold holds each split in about its share (70/20/10)
        shares = [np.mean(splits[folds == fold] == s) for s in SPLITS]
        np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.04)
    assert [fold_of(p, 0, 3) for p in PATIENTS[:50]] == [fold_of(p, 0, 3) for p in PATIENTS[:50]]


def test_a_fold_model_never_has_a_patient_of_its_fold_and_validates_on_the_validation_split():
    for p in PATIENTS[:500]:
        fold, split = fold_of(p, 0, 2), split_of(p, 0)
        assert not member(p, "train", 0, 2, fold) and not member(p, "val", 0, 2, fold)
        assert member(p, "val", 0, 2, 1 - fold) == (split == "val")
        assert member(p, "train", 0, 2, 1 - fold) == (split != "val")  # the test split trains too
        assert member(p, split, 0) and not member(p, "test" if split != "test" else "train", 0)


@pytest.fixture(scope="module")
def fold_run(ray_local, tmp_path_factory):
    """Two fold models (2 epochs each) on a 30-patient registry: (registry folder, training result)."""
    out = str(tmp_path_factory.mktemp("folds"))
    synth.generate(synth.SynthConfig(patients=30, out=out, seed=5, rows_per_file=1000, class_mix=(1 / 6,) * 6))
    labels = labelled.LabelSet(f"{out}/registry", f"{out}/ratings")
    config = training.TrainConfig(data=labels, out=f"{out}/runs", name="cv", epochs=2, batch_size=32, folds=2)
    return out, training.train(dataclasses.replace(config, model=SMALL_MODEL))


@pytest.mark.slow
def test_a_fold_set_scores_each_joint_with_the_model_that_never_saw_its_patient(fold_run, tmp_path):
    out, result = fold_run
    assert [m.model for m in result.folds] == [f"{result.run}/fold-{k}/model" for k in range(2)]
    card = checkpoint.read_card(result.model)
    assert card.members == ["fold-0/model", "fold-1/model"] and len(checkpoint.load_members(result.model)) == 2
    patients = checkpoint.read_patients(result.model).to_pandas().set_index("patient_id")["fold"]
    assert all(fold_of(p, 0, 2) == f for p, f in patients.items())
    for k, fold in enumerate(result.folds):  # no fold model has a patient of its own fold among those it saw
        seen = set(checkpoint.read_patients(fold.model)["patient_id"].to_pylist())
        assert seen and not seen & set(patients.index[patients == k])

    # the registry plus one radiograph of a patient no model saw
    registry = storage.read_table(f"{out}/registry")
    new = registry.slice(0, 10).to_pandas()
    new["patient_id"], new["joint_id"] = "p-new", [f"new/{j}" for j in new["joint"]]
    new["visit_date"] = datetime.date(2030, 1, 1)
    folder = tmp_path / "registry"
    folder.mkdir()
    pq.write_table(registry, folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pandas(new, schema=schema.REGISTRY, preserve_index=False), folder / "part-1.parquet")
    run = scoring.score(scoring.ScoreConfig(str(folder), result.model, str(tmp_path / "runs"), batch_size=16)).run
    scores = storage.read_table(runs.manifest(run).path("scores")).to_pandas().set_index("joint_id")
    assert len(scores) == registry.num_rows + 10 and scores["error"].isna().all()
    assert not scores["in_sample"].any() and scores["model_version"].eq(card.model_version).all()

    images = dict(zip(scores.index, [None] * len(scores), strict=True))
    images |= dict(zip(registry["joint_id"].to_pylist(), registry["image"].to_pylist(), strict=True))
    images |= dict(zip(new["joint_id"], new["image"], strict=True))
    members = checkpoint.load_members(result.model)
    sample = list(scores.index[:: max(1, len(scores) // 40)]) + list(new["joint_id"][:3])
    for joint_id in sample:
        row = scores.loc[joint_id]
        pixels = letterbox(images[joint_id], 64, mirrored(card.preprocess, row["body_part"]))[None]
        each = []
        for network, fold_card in members:
            raw = probabilities(network, pixels)[0].astype(np.float64)
            fitted = fold_card.calibration
            each.append((raw, calibration.apply(raw[None], fitted["temperature"], fitted["shift"])[0]))
        fold = patients.get(row["patient_id"], -1)
        if fold >= 0:  # the held-out fold model's own answer and its own argmax stage
            raw, calibrated = each[fold]
            assert np.isnan(row["stage_spread"])
            assert row["ratingen_pred"] == int(np.argmax(raw))
        else:  # a new patient: the mean over the fold models, its argmax, and their spread
            calibrated = np.mean([c for _, c in each], axis=0)
            expected = [float(np.dot(np.arange(6), c)) for _, c in each]
            assert row["stage_spread"] == pytest.approx(np.std(expected), abs=1e-4)
            assert row["ratingen_pred"] == int(np.argmax(calibrated))
        np.testing.assert_allclose(row["probs"], calibrated, atol=1e-5)

    # the report's heat maps come from the fold model that scored each joint
    explained = report.build(
        report.ReportConfig(scores=run, ratings=f"{out}/ratings", registry=str(folder), cam=3), str(tmp_path / "rep")
    )
    assert sum(1 for line in open(explained.html) if "figures/cam_" in line) >= 3
    known = [j for j in sample if scores.loc[j, "patient_id"] in patients.index][:6]
    crops = np.stack([letterbox(images[j], 64) for j in known])
    owners = scores.loc[known, "patient_id"].tolist()
    assert len({patients[p] for p in owners}) == 2  # joints of both folds
    heat = cam.heat_maps(result.model, crops, np.zeros(len(known), np.int64), owners, storage.StorageOptions())
    for crop, owner, h in zip(crops, owners, heat, strict=True):
        np.testing.assert_allclose(
            h, cam.grad_cam(members[patients[owner]][0], crop[None], np.zeros(1, np.int64))[0], atol=1e-4
        )


@pytest.mark.slow
def test_a_fold_sets_embeddings_come_from_the_fold_model_that_scored_each_joint(fold_run, tmp_path):
    out, result = fold_run
    patients = checkpoint.read_patients(result.model).to_pandas().set_index("patient_id")["fold"]
    whole = storage.read_table(f"{out}/registry")
    fold = np.array([patients.get(p, -1) for p in whole["patient_id"].to_pylist()])
    registry = whole.take(np.concatenate([np.flatnonzero(fold == k)[:30] for k in (0, 1)]))  # joints of both folds
    new = registry.slice(0, 5).to_pandas()
    new["patient_id"], new["joint_id"] = "p-new", [f"new/{i}" for i in range(5)]
    folder = tmp_path / "registry"
    folder.mkdir()
    pq.write_table(registry, folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pandas(new, schema=schema.REGISTRY, preserve_index=False), folder / "part-1.parquet")
    config = scoring.ScoreConfig(str(folder), result.model, str(tmp_path / "runs"), batch_size=16, embeddings=True)
    manifest = runs.manifest(scoring.score(config).run)
    embedded = storage.read_table(manifest.path("embeddings")).to_pandas().set_index("joint_id")
    assert manifest.rows["embedded"] == len(embedded) == registry.num_rows + 5

    owners = dict(zip(registry["joint_id"].to_pylist(), registry["patient_id"].to_pylist(), strict=True))
    expected_fold = {j: int(patients[p]) for j, p in owners.items()} | {j: 0 for j in new["joint_id"]}
    assert embedded["fold"].to_dict() == expected_fold  # a new patient's embedding: fold 0's space
    assert {int(patients[p]) for p in owners.values()} == {0, 1}  # joints of both folds
    members = checkpoint.load_members(result.model)
    images = dict(zip(registry["joint_id"].to_pylist(), registry["image"].to_pylist(), strict=True))
    images |= dict(zip(new["joint_id"], new["image"], strict=True))
    parts = dict(zip(registry["joint_id"].to_pylist(), registry["body_part"].to_pylist(), strict=True))
    parts |= dict(zip(new["joint_id"], new["body_part"], strict=True))
    card = checkpoint.read_card(result.model)
    for joint_id, fold in expected_fold.items():
        pixels = letterbox(images[joint_id], 64, mirrored(card.preprocess, parts[joint_id]))[None]
        network = for_inference(members[fold][0])
        _, own = predict_embedded(network, pixels)
        np.testing.assert_allclose(embedded.loc[joint_id, "embedding"], own[0], rtol=1e-2, atol=1e-2)
    spaces = [predict_embedded(for_inference(network), pixels)[1][0] for network, _ in members]
    assert np.abs(spaces[0] - spaces[1]).max() > 0.1  # the two fold models embed apart: the check above tells them


@pytest.mark.slow
def test_a_single_models_scores_say_which_patients_it_saw_and_the_report_leaves_them_out(fold_run, tmp_path):
    out, result = fold_run
    model = result.folds[0].model  # one model: trained on fold 1's patients, never on fold 0's
    run = scoring.score(scoring.ScoreConfig(f"{out}/registry", model, str(tmp_path / "runs"), batch_size=16)).run
    scores = storage.read_table(runs.manifest(run).path("scores")).to_pandas()
    seen = set(checkpoint.read_patients(model)["patient_id"].to_pylist())
    np.testing.assert_array_equal(scores["in_sample"], scores["patient_id"].isin(seen))
    assert 0 < scores["in_sample"].sum() < len(scores)

    ratings = f"{out}/ratings"
    default = report.build(report.ReportConfig(scores=run, ratings=ratings), str(tmp_path / "report"))
    table = default.tables.accounting
    accounting = table[table["source"] == "scores"].set_index("outcome")["rows"]
    assert accounting["left out, in-sample: the model saw the patient in training"] == scores["in_sample"].sum()
    assert accounting["used"] == (~scores["in_sample"]).sum()
    both = report.build(report.ReportConfig(scores=run, ratings=ratings, in_sample=True), str(tmp_path / "all"))
    table = both.tables.accounting
    assert table[(table["source"] == "scores") & (table["outcome"] == "used")]["rows"].item() == len(scores)
    assert "left out: joints of patients the model saw" in open(default.html).read()

    # the agreement expected from the calibrated probabilities, and its check on the rated joints
    estimated = default.estimated.set_index("joints")
    used = accounting["used"]
    assert estimated.loc["measured, rated", "n"] == used
    assert estimated.loc["estimated, rated", "n"] == pytest.approx(used)  # a sum of probabilities
    assert estimated.loc["estimated, not rated", "n"] == 0  # the registry rater rated every joint
    assert estimated["reference"].eq("registry").all()
    rated = scores[~scores["in_sample"]].merge(
        storage.read_table(ratings).to_pandas().query("rater == 'registry'"), on="joint_id"
    )
    measured = balanced_accuracy_score(rated["ratingen"], rated["ratingen_pred"])
    assert estimated.loc["measured, rated", "balanced_accuracy"] == pytest.approx(measured)
    assert "Estimated agreement before ratings arrive" in open(default.html).read()
