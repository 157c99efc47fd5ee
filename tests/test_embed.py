"""Embeddings: the penultimate layer, scoring's embeddings table, the nearest rated neighbours, the review queue's
second signal and ``erosion embed`` (issue 18)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from conftest import SMALL_MODEL
from sklearn.neighbors import NearestNeighbors

from erosion.cli.main import main
from erosion.core import neighbours, schema
from erosion.io import runs, storage
from erosion.model import checkpoint
from erosion.model.network import ModelConfig, build_model, for_inference, predict, predict_embedded
from erosion.registry.preprocess import letterbox
from erosion.report import embedding, queue, report
from erosion.score import scoring

CDF_MODEL, VGG_MODEL = ModelConfig(input_size=64, width=0.25, head="cdf"), ModelConfig(input_size=32, arch="vgg16")


@pytest.mark.parametrize("config", [SMALL_MODEL, CDF_MODEL, VGG_MODEL])
def test_the_embedding_is_the_penultimate_layer_whose_last_layer_gives_the_logits(config):
    torch.manual_seed(0)
    model = build_model(config).eval()
    crops = torch.rand(3, 1, config.input_size, config.input_size)
    with torch.no_grad():
        embedded = model.embed(crops)
        assert embedded.shape == (3, model.embedding_width)
        torch.testing.assert_close(model.output(embedded), model(crops))
    if config.arch == "cnn":  # the second dense block's output: what the last linear layer takes in
        assert model.embedding_width == model.head[-model.output_layers].in_features == 64


def test_predict_embedded_gives_predicts_predictions_and_float16_embeddings_in_chunks():
    torch.manual_seed(0)
    model = for_inference(build_model(SMALL_MODEL))
    pixels = np.random.default_rng(0).integers(0, 256, (40, 64, 64), dtype=np.uint8)  # two CPU chunks of 32
    predicted, embedded = predict_embedded(model, pixels)
    np.testing.assert_allclose(predicted[:, :6], predict(model, pixels)[:, :6], atol=1e-6)
    assert embedded.dtype == np.float16 and embedded.shape == (40, 64)
    with torch.no_grad():
        direct = model.embed(torch.from_numpy(pixels[-3:]).unsqueeze(1).float() / 255).numpy()
    np.testing.assert_allclose(embedded[-3:].astype(np.float32), direct, rtol=2e-3, atol=2e-3)
    assert predict_embedded(model, pixels[:0])[1].shape == (0, 64)


def test_nearest_neighbours_of_other_patients_in_one_space_match_scikit_learn():
    rng = np.random.default_rng(1)
    references = rng.normal(size=(300, 8))
    queries = rng.normal(size=(70, 8))
    patients_r, patients_q = rng.integers(0, 40, 300).astype(str), rng.integers(0, 40, 70).astype(str)
    spaces_r, spaces_q = rng.integers(0, 2, 300), rng.integers(0, 2, 70)
    index, distance = neighbours.nearest(
        neighbours.Points(queries, spaces_q, patients_q), neighbours.Points(references, spaces_r, patients_r), 5
    )
    for space in (0, 1):
        kept = np.flatnonzero(spaces_r == space)
        fitted = NearestNeighbors(n_neighbors=len(kept)).fit(references[kept])
        for q in np.flatnonzero(spaces_q == space):
            dist, order = fitted.kneighbors(queries[q : q + 1])
            other = patients_r[kept[order[0]]] != patients_q[q]
            np.testing.assert_array_equal(index[q], kept[order[0][other]][:5])
            np.testing.assert_allclose(distance[q], dist[0][other][:5], rtol=1e-9)


def test_fewer_neighbours_than_k_are_padded_and_the_disagreement_is_their_mean_distance_in_stages():
    points = neighbours.Points(np.array([[0.0], [1.0], [3.0], [10.0]]), np.zeros(4), np.array(["a", "b", "b", "c"]))
    index, distance = neighbours.nearest(points, points, 4)
    assert index[0].tolist() == [1, 2, 3, -1]  # not itself, nor another joint of its patient
    assert index[1].tolist() == [0, 3, -1, -1] and np.isinf(distance[1, 2:]).all()
    stages = neighbours.neighbour_stages(index, np.array([0, 2, 5, 4]))
    assert stages[1].tolist() == [0, 4, -1, -1]
    np.testing.assert_allclose(neighbours.disagreement(stages, np.array([0, 2, 5, 4])), [11 / 3, 2, 3, 7 / 3])
    np.testing.assert_allclose(neighbours.stage_mix(stages)[1], [0.5, 0, 0, 0, 0.5, 0])
    lonely = neighbours.Points(np.zeros((1, 1)), np.zeros(1), np.array(["a"]))
    assert np.isnan(neighbours.disagreement(neighbours.neighbour_stages(neighbours.nearest(lonely, lonely, 2)[0],
                                                                        np.array([1])), np.array([1])))[0]  # fmt: skip


def test_the_queue_ranks_by_the_neighbours_or_by_the_sum_when_asked_and_by_the_model_by_default():
    frame = pd.DataFrame(
        {
            "joint_id": ["a", "b", "c"],
            "patient_id": ["p", "q", "r"],
            "joint": ["pip2", "mcp2", "pip3"],
            "rating": [0, 3, 1],
            "probs": [np.eye(6)[2], np.eye(6)[3], np.eye(6)[0]],  # the model: 2 stages off, agrees, 1 off
            "in_sample": False,
            "neighbours": [0.5, 4.0, np.nan],  # c: no embedding
        }
    )
    ranked = {
        by: queue.rank(frame, queue.ReviewConfig("s", "r", "o", top=3, max_share=1, rank_by=by))["joint_id"].tolist()
        for by in queue.RANKINGS
    }
    assert ranked == {"model": ["a", "c", "b"], "neighbours": ["b", "a", "c"], "sum": ["b", "a", "c"]}
    shown = queue.rank(frame, queue.ReviewConfig("s", "r", "o", top=3, max_share=1))
    np.testing.assert_array_equal(shown["neighbours"], [0.5, np.nan, 4.0])  # the column, whatever the ranking


def test_the_rated_neighbours_of_an_embedded_run_on_a_hand_worked_case():
    joints = pd.DataFrame({"joint_id": list("abcde"), "space": ["m/-1"] * 4 + ["m/0"], "patient_id": list("ppqrs"),
                           "joint": "pip2", "ratingen_pred": 0})  # fmt: skip
    embedded = embedding.Embedded(joints, np.array([[0.0], [0.1], [1.0], [5.0], [0.0]], np.float32))
    stages = pd.Series([4, 1, 0, 3], index=["a", "c", "d", "e"])  # b unrated; e alone in its space
    listed = embedding.rated_neighbours(embedded, np.arange(5), stages, k=2).set_index("joint_id")
    assert listed.loc["a", "neighbours"] == ["c", "d"] and listed.loc["a", "neighbour_stages"] == [1, 0]
    assert listed.loc["a", "disagreement"] == pytest.approx(3.5)  # (|1 - 4| + |0 - 4|) / 2
    assert listed.loc["b", "neighbours"] == ["c", "d"] and np.isnan(listed.loc["b", "disagreement"])  # unrated
    assert listed.loc["c", "neighbours"] == ["a", "d"] and listed.loc["c", "disagreement"] == pytest.approx(2.0)
    assert listed.loc["e", "neighbours"] == [] and np.isnan(listed.loc["e", "disagreement"])


@pytest.fixture(scope="module")
def embedded_run(ray_local, small_registry, untrained_model, tmp_path_factory) -> scoring.ScoreResult:
    root = tmp_path_factory.mktemp("embedded")
    model = untrained_model(root / "model", SMALL_MODEL)
    config = scoring.ScoreConfig(f"{small_registry}/registry", model, str(root / "runs"), "e", batch_size=64,
                                 embeddings=True)  # fmt: skip
    return scoring.score(config)


@pytest.mark.slow
def test_scoring_with_embeddings_writes_one_float16_embedding_per_scored_crop_beside_unchanged_scores(
    embedded_run, small_registry
):
    manifest = runs.manifest(embedded_run.run)
    scores = storage.read_table(manifest.path("scores"))
    assert scores.schema == schema.SCORES and scores.num_rows == embedded_run.rows
    table = storage.read_table(manifest.path("embeddings"))
    assert table.schema.field("embedding").type == schema.embeddings(64).field("embedding").type
    assert manifest.rows["embedded"] == table.num_rows == embedded_run.scored - embedded_run.carried
    assert sorted(table["joint_id"].to_pylist()) == sorted(
        j for j, e in zip(scores["joint_id"].to_pylist(), scores["error"].to_pylist(), strict=True) if e is None
    )
    assert set(table["fold"].to_pylist()) == {-1} and set(table["model_version"].to_pylist()) == {
        embedded_run.model_version
    }
    network, _ = checkpoint.load(manifest.model)
    registry = storage.read_table(f"{small_registry}/registry", ["joint_id", "image"]).to_pandas().head(5)
    stored = dict(zip(table["joint_id"].to_pylist(), table["embedding"].to_pylist(), strict=True))
    for row in registry.itertuples():
        alone = predict_embedded(for_inference(network), letterbox(row.image, 64)[None])[1][0]
        np.testing.assert_allclose(np.asarray(stored[row.joint_id], np.float32), alone, rtol=1e-2, atol=1e-2)


@pytest.mark.slow
def test_embed_maps_the_run_lists_neighbours_shows_on_the_report_and_feeds_the_review(
    embedded_run, small_registry, tmp_path, capsys
):
    ratings = f"{small_registry}/ratings"
    said = ["embed", "--scores", embedded_run.run, "--ratings", ratings, "--sample", "300", "--perplexity", "5"]
    assert main(said + ["--k", "4"]) == 0
    assert "300 crops of space" in capsys.readouterr().out
    mapped = runs.manifest(f"{embedded_run.run}/embedding")
    coordinates = storage.read_table(mapped.path("coordinates")).to_pandas()
    assert len(coordinates) == 300 and coordinates[["x", "y"]].notna().all().all()
    assert coordinates["joint_id"].is_unique and coordinates["rating"].notna().any()
    listed = storage.read_table(mapped.path("neighbours")).to_pandas()
    assert len(listed) == 300 and listed["neighbours"].map(len).eq(4).all()
    every = storage.read_table(runs.manifest(embedded_run.run).path("scores"), ["joint_id", "patient_id"]).to_pandas()
    patient = dict(zip(every["joint_id"], every["patient_id"], strict=True))
    pairs = zip(listed["joint_id"], listed["neighbours"], strict=True)
    assert all(patient[n] != patient[j] for j, ns in pairs for n in ns)  # other patients only
    assert storage.read_bytes(mapped.path("figure")).startswith(b"\x89PNG")

    page = open(report.report(report.ReportConfig(embedded_run.run, ratings)).html).read()
    assert "The model's view of the crops" in page

    own = storage.read_table(ratings).to_pandas().query("rater == 'registry'").head(20)
    wrong = own.assign(ratingen_read=own["ratingen"])[schema.CORRUPTED.names]  # said to be corrupted, for counting
    storage.write_table(f"{tmp_path}/corrupted/part-0.parquet", pa.Table.from_pandas(wrong, schema.CORRUPTED))
    config = queue.ReviewConfig(embedded_run.run, ratings, str(tmp_path / "q"), top=10, in_sample=True,
                                rank_by="neighbours", max_share=1, corrupted=f"{tmp_path}/corrupted")  # fmt: skip
    result = queue.build(config, str(tmp_path / "folder"))
    assert result.queue["neighbours"].notna().all() and result.queue["neighbours"].is_monotonic_decreasing
    assert {"ranked by model, stratified", "ranked by sum, stratified"} <= set(result.evaluation["queue"])
    assert "Neighbours" in open(result.html).read()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openTSNE") is None, reason="openTSNE is not installed")
def test_embed_places_another_sample_into_an_earlier_map_with_opentsne(embedded_run, small_registry, tmp_path):
    first = embedding.EmbedConfig(embedded_run.run, out=str(tmp_path / "first"), sample=200, perplexity=5)
    earlier = embedding.map_embedding(first)
    placed = embedding.map_embedding(
        embedding.EmbedConfig(embedded_run.run, out=str(tmp_path / "placed"), sample=50, seed=1, map=first.out)
    )
    assert placed.placed and len(placed.coordinates) == 50 and placed.space == earlier.space
    low, high = earlier.coordinates[["x", "y"]].min().to_numpy(), earlier.coordinates[["x", "y"]].max().to_numpy()
    inside = ((placed.coordinates[["x", "y"]] >= low - 1) & (placed.coordinates[["x", "y"]] <= high + 1)).all(axis=1)
    assert inside.mean() > 0.9  # placed among the earlier map's points, which stay where they were
