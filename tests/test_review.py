"""The review queue: its rules on hand-computed cases, synthetic corruption of ratings, and ``erosion review`` on
a real scoring run of the session's local Ray (queue, resolution by a second rating, the measurement, the page)."""

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_MODEL

from erosion.cli.main import main
from erosion.core import review, schema
from erosion.core.domain import joint_type, ratingen_stage
from erosion.io import runs, storage
from erosion.model import checkpoint
from erosion.registry import synth
from erosion.report import queue
from erosion.score import scoring


def test_the_expected_distance_of_a_rating_from_the_models_distribution():
    probs = np.array([[0.1, 0.6, 0.3, 0, 0, 0], [0, 0, 0, 0, 0, 1.0], [0.5, 0, 0, 0.5, 0, 0]])
    ratings = np.array([0, 5, 1])
    # by hand: 0.6*1 + 0.3*2; 0; 0.5*1 + 0.5*2  and squared: 0.6*1 + 0.3*4; 0; 0.5*1 + 0.5*4
    np.testing.assert_allclose(review.expected_distance(probs, ratings), [1.2, 0.0, 1.5])
    np.testing.assert_allclose(review.expected_distance(probs, ratings, power=2), [1.8, 0.0, 2.5])
    with pytest.raises(ValueError, match="power"):
        review.expected_distance(probs, ratings, power=3)


def test_confident_learning_thresholds_and_flags_on_a_hand_computed_case():
    probs = np.array(
        [
            [0.9, 0.1, 0, 0, 0, 0],  # rated 0
            [0.5, 0.5, 0, 0, 0, 0],  # rated 0
            [0.3, 0.6, 0.1, 0, 0, 0],  # rated 1
            [0.2, 0.2, 0.6, 0, 0, 0],  # rated 1
            [0.1, 0.3, 0.6, 0, 0, 0],  # rated 2
        ]
    )
    ratings = np.array([0, 0, 1, 1, 2])
    thresholds = review.stage_thresholds(probs, ratings)
    # t0 = (0.9 + 0.5) / 2 = 0.7; t1 = (0.6 + 0.2) / 2 = 0.4; t2 = 0.6; stages 3-5: nobody rated them
    np.testing.assert_allclose(thresholds[:3], [0.7, 0.4, 0.6])
    assert np.isnan(thresholds[3:]).all()
    # joint 0: only stage 0 reaches (0.9 >= 0.7) -> 0; joint 1: stage 1 (0.5 >= 0.4), stage 0 not (0.5 < 0.7) -> 1;
    # joint 2: stage 1 -> 1; joint 3: stage 2 (0.6 >= 0.6) -> 2; joint 4: stage 2 (0.6), stage 1 (0.3 < 0.4) -> 2
    np.testing.assert_array_equal(review.confident_stage(probs, thresholds), [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(review.flagged(probs, ratings, thresholds), [False, True, False, True, False])
    none = np.array([[0.6, 0.3, 0.1, 0, 0, 0]])  # reaches no threshold: no confident stage, never flagged
    assert review.confident_stage(none, np.array([0.7, 0.4, 0.6, np.nan, np.nan, np.nan]))[0] == -1


def test_the_queue_takes_the_highest_scores_but_no_stratum_fills_it():
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2.0])
    joint = np.array(["PIP", "PIP", "PIP", "PIP", "MCP", "MCP", "PIP", "MCP"])
    stage = np.array([0, 0, 1, 2, 0, 3, 4, 5])
    # 4 places, at most 2 per joint type and per stage: 0 (PIP, 0), 1 (PIP, 0), then PIP is full: 4 (MCP, 0)
    # would make stage 0 three; 5 (MCP, 3) is taken, then 7 (MCP, 5)
    np.testing.assert_array_equal(review.stratified_order(scores, [joint, stage], 4, 0.5), [0, 1, 5, 7])
    # a share of 0.25 (one place) is less than two joint types need to fill 4 places evenly: 2 each; stages
    # (six labels) one each: 0 (PIP, 0), 2 (PIP, 1), 4 skipped (stage 0 full), 5 (MCP, 3), 6 skipped (PIP full), 7
    np.testing.assert_array_equal(review.stratified_order(scores, [joint, stage], 4, 0.25), [0, 2, 5, 7])
    # no share limit: the plain top 4
    np.testing.assert_array_equal(review.stratified_order(scores, [joint, stage], 4, 1.0), [0, 1, 2, 3])
    # all in one stratum: the cap cannot be kept, so the places go to the skipped ones by score
    np.testing.assert_array_equal(review.stratified_order(scores[:4], [joint[:4]], 3, 0.34), [0, 1, 2])
    assert review.precision_recall(np.array([0, 1, 5]), np.array([1, 0, 0, 0, 0, 1, 1, 0], bool)) == (2 / 3, 2 / 3)


def test_synth_corrupts_a_share_of_the_registry_raters_stages_by_two_or_more_and_lists_them(tmp_path):
    plain, corrupted = str(tmp_path / "plain"), str(tmp_path / "corrupted")
    synth.generate(synth.SynthConfig(patients=20, out=plain, seed=4))
    synth.generate(synth.SynthConfig(patients=20, out=corrupted, seed=4, corrupt_share=0.1))
    for table in ("registry", "truth"):  # only the ratings change
        digests = [
            [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((tmp_path / run / table).glob("*.parquet"))]
            for run in ("plain", "corrupted")
        ]
        assert digests[0] == digests[1]
    before = storage.read_table(f"{plain}/ratings").to_pandas()
    after = storage.read_table(f"{corrupted}/ratings").to_pandas()
    listed = storage.read_table(f"{corrupted}/corrupted").to_pandas()
    assert listed.columns.tolist() == schema.CORRUPTED.names
    changed = (before["ratingen"] != after["ratingen"]) | (before["erosion_pct"] != after["erosion_pct"])
    assert set(after.loc[changed, "joint_id"]) == set(listed["joint_id"])
    assert (after["rater"][changed] == "registry").all()
    registry_rows = (before["rater"] == "registry").sum()
    assert 0.06 < len(listed) / registry_rows < 0.14
    joined = listed.merge(before, on=["joint_id", "rater"], suffixes=("", "_before"))
    assert (joined["ratingen_read"] == joined["ratingen_before"]).all()
    assert ((joined["ratingen"] - joined["ratingen_read"]).abs() >= 2).all()
    assert (ratingen_stage(after["erosion_pct"].to_numpy()) == after["ratingen"].to_numpy()).all()


@pytest.fixture(scope="module")
def scored(ray_local, tmp_path_factory, untrained_model):
    """A 16-patient registry with 5 % of the registry rater's stages corrupted, scored by an untrained model that
    claims to have trained on a third of the patients: (data folder, scoring run, the patients it saw)."""
    root = tmp_path_factory.mktemp("review")
    data = str(root / "data")
    synth.generate(synth.SynthConfig(patients=16, out=data, seed=8, rows_per_file=300, corrupt_share=0.05))
    model = untrained_model(root / "model", SMALL_MODEL)
    patients = sorted(set(storage.read_table(f"{data}/registry", ["patient_id"])["patient_id"].to_pylist()))
    seen = patients[::3]
    checkpoint.write_patients(model, pa.table({"patient_id": pa.array(seen, pa.string())}))
    result = scoring.score(scoring.ScoreConfig(f"{data}/registry", model, str(root / "runs"), batch_size=64))
    return data, result.run, set(seen)


def test_the_queue_ranks_out_of_sample_single_ratings_and_accounts_for_every_rating(scored, tmp_path):
    data, run, seen = scored
    config = queue.ReviewConfig(scores=run, ratings=f"{data}/ratings", out=str(tmp_path / "queue"), top=40)
    result = queue.queue(config)
    q = result.queue
    assert len(q) == 40 and q["rank"].tolist() == list(range(1, 41))
    ratings = storage.read_table(f"{data}/ratings").to_pandas()
    re_rated = set(ratings.loc[ratings["rater"] != "registry", "joint_id"])
    assert not set(q["joint_id"]) & re_rated and not q["patient_id"].isin(seen).any()
    own = ratings[ratings["rater"] == "registry"].set_index("joint_id")["ratingen"]
    assert (q["rating"].to_numpy() == own[q["joint_id"]].to_numpy()).all()
    probs = np.stack(q["probs"].to_numpy())
    expected = (probs * np.abs(np.arange(6)[None] - q["rating"].to_numpy()[:, None])).sum(axis=1)
    np.testing.assert_allclose(q["score"], expected, rtol=1e-5)
    # at most 30 % of the places per rated stage, and per joint type: with two joint types (PIP, MCP), half
    assert q["rating"].value_counts().max() <= 12 and q["joint"].map(joint_type).value_counts().max() <= 20
    accounting = result.accounting.set_index("outcome")["rows"]
    left = accounting.drop(["ratings of the rater", "candidates", "queued"]).sum()
    rated = (ratings["rater"] == "registry").sum()
    assert accounting["ratings of the rater"] == left + accounting["candidates"] == rated
    committed = runs.manifest(config.out)
    files = pd.read_csv(f"{committed.run}/{committed.attempt}/queue.csv")
    assert files.columns[-6:].tolist() == [f"p{k}" for k in range(6)] and len(files) == 40
    page = open(result.html).read()
    assert page.count("<img") == 40 and "Review queue" in page

    scores = storage.read_table(runs.manifest(run).path("scores")).to_pandas()
    everyone, _ = queue.candidates(scores, ratings, "registry", in_sample=True)
    assert set(everyone.loc[everyone["in_sample"], "patient_id"]) == seen
    assert len(everyone) == own.index.nunique()
    asked = queue.build(queue.ReviewConfig(run, f"{data}/ratings", "unused", top=20, in_sample=True), str(tmp_path))
    assert set(asked.queue.loc[asked.queue["in_sample"], "patient_id"]) <= seen


def test_a_second_rating_resolves_a_queued_item_and_it_leaves_the_queue(scored, tmp_path):
    data, run, _ = scored
    out = str(tmp_path / "queue")
    config = queue.ReviewConfig(scores=run, ratings=f"{data}/ratings", out=out, top=10)
    first = queue.queue(config).queue
    kept, changed = first.iloc[0], first.iloc[1]
    second = pd.DataFrame(
        {
            "joint_id": [kept["joint_id"], changed["joint_id"]],
            "rater": "reviewer",
            "erosion_pct": pd.array([None, None], dtype="float32"),
            "ratingen": np.array([kept["rating"], (changed["rating"] + 3) % 6], dtype=np.int8),
        }
    )
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    pq.write_table(storage.read_table(f"{data}/ratings"), ratings / "part-0.parquet")
    added = pa.Table.from_pandas(second, schema=schema.RATINGS, preserve_index=False)
    pq.write_table(added, ratings / "part-1.parquet")
    again = queue.queue(queue.ReviewConfig(scores=run, ratings=str(ratings), out=out, top=10))
    resolved = again.resolved.set_index("joint_id")
    assert resolved.loc[kept["joint_id"], "outcome"] == "kept"
    assert resolved.loc[changed["joint_id"], "outcome"] == "changed"
    assert resolved.loc[changed["joint_id"], "second_rating"] == (changed["rating"] + 3) % 6
    assert resolved["second_rater"].eq("reviewer").all() and len(resolved) == 2
    assert not again.queue["joint_id"].isin(resolved.index).any()
    third = queue.queue(queue.ReviewConfig(scores=run, ratings=str(ratings), out=out, top=10))
    assert len(third.resolved) == 2  # kept across reviews, not resolved twice
    assert third.accounting.set_index("outcome")["rows"]["left out, resolved by a second rating"] == 2


def test_the_measurement_against_corrupted_ratings_counts_the_queues_hits(scored, tmp_path):
    data, run, _ = scored
    config = queue.ReviewConfig(run, f"{data}/ratings", str(tmp_path / "q"), top=30, corrupted=f"{data}/corrupted")
    result = queue.build(config, str(tmp_path / "folder"))
    corrupted = set(storage.read_table(f"{data}/corrupted")["joint_id"].to_pylist())
    rows = result.evaluation.set_index("queue")
    mine = rows.loc[rows.index.str.startswith("review queue")].iloc[0]
    hits = len(set(result.queue["joint_id"]) & corrupted)
    assert mine["corrupted_in_queue"] == hits and mine["precision"] == pytest.approx(hits / 30)
    assert set(rows.index) == {mine.name, "random queue", "lowest maximum probability"}
    assert (rows["places"] == 30).all() and rows["corrupted_candidates"].nunique() == 1


def test_review_on_the_command_line_refuses_in_sample_scores_unless_asked(scored, tmp_path, capsys):
    data, run, seen = scored
    out = str(tmp_path / "queue")
    assert main(["review", "--scores", run, "--ratings", f"{data}/ratings", "--out", out, "--top", "5"]) == 0
    said = capsys.readouterr().out
    assert "queued 5 ratings" in said and "review.html" in said
    accounting = storage.read_table(runs.manifest(out).path("accounting")).to_pandas().set_index("outcome")["rows"]
    assert accounting["left out, in-sample (the model trained on the patient)"] > 0
