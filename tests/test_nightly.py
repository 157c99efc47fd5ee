"""The nightly job on a real local Ray: carry-over of unchanged joints, idempotent nights, one committed run each."""

import dataclasses
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_MODEL, attempts

from erosion.cli.main import main
from erosion.core import schema
from erosion.io import runs, storage
from erosion.score import carry, scoring
from erosion.workflows import nightly


def test_carry_finds_exactly_the_fingerprints_it_holds():
    ids = [f"sop{i}/mcp1" for i in range(50)]
    images = [bytes([i]) * 100 for i in range(50)]
    prints, present = carry.fingerprints(ids, images)
    assert present.all() and len({p.tobytes() for p in prints}) == 50
    probs = np.random.default_rng(0).random((50, 7)).astype(np.float32)  # six probabilities and a %
    lookup = carry.Carry.of(prints[:40], probs[:40])
    changed, _ = carry.fingerprints(ids[:1], [images[0] + b"x"])  # same joint, new image
    moved, _ = carry.fingerprints(ids[1:2], [images[2]])  # another joint's image
    queries = np.concatenate([prints[::-1], changed, moved])
    found = lookup.find(queries)
    expected = np.concatenate([np.arange(50)[::-1], [50, 51]])
    for index, position in zip(expected, found, strict=True):
        if index < 40:
            np.testing.assert_array_equal(lookup.predictions[position], probs[index])
        else:
            assert position == -1
    none, present = carry.fingerprints([None, "a"], [b"x", None])
    assert not present.any() and (carry.Carry.of(prints[:0], probs[:0]).find(prints) == -1).all()


def test_carry_takes_the_percent_and_the_crop_statistics_where_the_scores_have_them_and_nan_where_they_predate_them(
    tmp_path,
):
    prints, _ = carry.fingerprints(["a/mcp1", "b/mcp1", "c/mcp1"], [b"1", b"2", b"3"])
    probs = np.eye(6, dtype=np.float32)[:3]
    columns = {
        "fingerprint": pa.array([p.tobytes() for p in prints], pa.binary(16)),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), 6),
        "ratingen_pred": pa.array([0, 1, None], pa.int8()),
        "error": pa.array([None, None, "cannot decode image: truncated"], pa.string()),
    }
    for name, table in {
        "new": pa.table(
            columns
            | {
                "erosion_pct_pred": pa.array([12.5, None, None], pa.float32()),
                "crop": schema.crop_column(np.array([[120, 90, 16, 0.25, 0.5, 0.125]] + [[np.nan] * 6] * 2)),
            }
        ),
        "old": pa.table(columns),
    }.items():
        os.makedirs(tmp_path / name)
        pq.write_table(table, tmp_path / name / "part-0.parquet")
    crop = np.array([[120, 90, 16, 0.25, 0.5, 0.125], [np.nan] * 6])
    for name, pct, crops in (("new", [12.5, np.nan], crop), ("old", [np.nan, np.nan], np.full((2, 6), np.nan))):
        lookup = carry.load(str(tmp_path / name))
        found = lookup.find(prints)
        assert found[2] == -1  # a failed row is scored again, not carried
        nan = np.full(2, np.nan)  # no spread, in-sample unknown: columns these scores predate
        expected = np.column_stack([probs[:2], pct, nan, [0, 1], nan, crops])
        np.testing.assert_array_equal(lookup.predictions[found[:2]], expected)


def test_copying_scores_of_an_earlier_version_keeps_every_column_they_have_and_nulls_the_new_ones(tmp_path):
    old_schema = pa.schema([f for f in schema.SCORES if f.name not in ("in_sample", "stage_spread")])
    rows = {f.name: pa.nulls(2, f.type) for f in old_schema}
    rows |= {
        "joint_id": pa.array(["a/mcp1", "b/mcp1"]),
        "run_id": pa.array(["old", "old"]),
        "model_version": pa.array(["v", "v"]),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(np.eye(6, dtype=np.float32)[:2].ravel()), 6),
        "ratingen_pred": pa.array([0, 1], pa.int8()),
        "carried": pa.array([False, False]),
        "source_file": pa.array(["reg/part-0.parquet"] * 2),
    }
    os.makedirs(tmp_path / "old")
    pq.write_table(pa.table(rows, schema=old_schema), tmp_path / "old" / "part-0.parquet")
    assert carry.copy(str(tmp_path / "old"), {"reg/part-0.parquet"}, "new", str(tmp_path / "new")) == 2
    copied = storage.read_table(str(tmp_path / "new")).to_pylist()
    assert [r["probs"] for r in copied] == np.eye(6)[:2].tolist() and [r["ratingen_pred"] for r in copied] == [0, 1]
    assert all(r["run_id"] == "new" and r["carried"] and r["in_sample"] is None for r in copied)


def _scores(run: str) -> dict[str, tuple]:
    table = pq.read_table(
        runs.manifest(run).path("scores"), columns=["joint_id", "probs", "carried", "error"]
    ).to_pylist()
    return {r["joint_id"]: (r["probs"], r["carried"], r["error"]) for r in table}


@pytest.fixture(scope="module")
def nights(ray_local, small_registry, untrained_model, tmp_path_factory) -> dict:
    """Three nights and a new model: unchanged, re-run, one image changed and a file of new joints added."""
    root = tmp_path_factory.mktemp("nightly")
    registry = root / "registry"
    shutil.copytree(f"{small_registry}/registry", registry)
    model = untrained_model(root / "model", SMALL_MODEL)

    def night(run_id: str, model: str = model) -> nightly.NightlyResult:
        settings = scoring.ScoreConfig(str(registry), model, str(root / "runs"), run_id=run_id)
        activity = f"{small_registry}/activity"
        return nightly.nightly(nightly.NightlyConfig(settings, ratings=f"{small_registry}/ratings", activity=activity))

    first, second, again = night("2026-11-21"), night("2026-11-22"), night("2026-11-22")

    files = sorted(f for f in os.listdir(registry) if f.endswith(".parquet"))
    table = pq.read_table(registry / files[0])
    images = table["image"].to_pylist()
    changed = table["joint_id"][0].as_py()
    images[0] = pq.read_table(registry / files[-1])["image"][5].as_py()  # another crop's image
    pq.write_table(
        table.set_column(table.schema.get_field_index("image"), "image", pa.array(images)), registry / files[0]
    )
    new = table.slice(1, 3).set_column(
        0, "joint_id", pa.array([f"new/{j}" for j in table["joint_id"].to_pylist()[1:4]], pa.string())
    )
    pq.write_table(new, registry / "part-new.parquet")
    third = night("2026-11-23")
    other = untrained_model(root / "model-2", dataclasses.replace(SMALL_MODEL, width=0.5))
    fourth = night("2026-11-24", other)
    return {
        "root": root,
        "nights": [first, second, again, third, fourth],
        "changed": changed,
        "registry": registry,
        "out": str(root / "runs"),
    }


@pytest.mark.slow
def test_a_nights_report_relates_its_rau_scores_to_disease_activity(nights):
    first = nights["nights"][0]
    related = first.report.activity
    assert related is not None and set(related.summary["relation"]) == {"Rau at the visit", "Rau change per year"}
    assert related.summary["n"].sum() > 0 and len(related.visits) == first.manifest.rows["visits"]
    settings = first.manifest.config
    assert settings["activity"].endswith("/activity") and settings["activity_window_days"] == 90
    page = open(first.manifest.path("report")).read()
    assert "Disease activity and erosion" in page and "figures/activity.png" in page


@pytest.mark.slow
def test_the_second_night_carries_every_scored_joint_over_with_the_same_scores(nights):
    first, second = nights["nights"][:2]
    assert first.ran and second.ran
    m1, m2 = first.manifest, second.manifest
    assert m1.rows["carried"] == 0 and m1.carried_from is None
    assert m1.rows["failed"] == 0
    assert m1.rows["total"] > 0
    assert m2.rows["carried"] == m1.rows["total"] - m1.rows["failed"] and m2.carried_from == "2026-11-21"
    s1, s2 = _scores(first.run), _scores(second.run)
    assert s1.keys() == s2.keys()
    for joint, (probs, carried, error) in s2.items():
        assert carried and error is None and probs == pytest.approx(s1[joint][0], abs=0)
    files = len(m1.inputs)
    assert files >= 2 and m1.rows["files_read"] == files and m1.rows["rows_read"] == m1.rows["total"]
    # nothing changed: no registry file is read at all, every row copied by its file
    assert m2.rows["files_read"] == 0 and m2.rows["rows_read"] == 0 and m2.rows["files_carried"] == files
    sources = pq.read_table(m2.path("scores"), columns=["source_file"])["source_file"].to_pylist()
    assert {s: sources.count(s) for s in set(sources)} == {f: i["rows"] for f, i in m2.inputs.items()}
    for name in ("scores", "rau", "report"):
        assert os.path.exists(m2.path(name)), name
    assert os.path.exists(f"{os.path.dirname(m2.path('report'))}/agreement.parquet")
    assert m2.kind == "nightly" and set(m2.seconds) == {"scoring", "report", "monitoring", "total"}
    assert sum(f["rows"] for f in m2.inputs.values()) == m2.rows["total"]
    assert {"python", "ray", "torch", "pyarrow"} <= set(m2.versions)


@pytest.mark.slow
def test_the_same_night_twice_changes_nothing_and_makes_no_second_copy(nights):
    second, again = nights["nights"][1:3]
    assert not again.ran and again.manifest.committed_at == second.manifest.committed_at
    ids = [m.run_id for m in runs.committed(nights["out"])]
    assert ids == ["2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24"]
    for m in runs.committed(nights["out"]):  # nothing left half-written: one attempt folder a night
        assert attempts(m.run) == [m.attempt]


@pytest.mark.slow
def test_a_changed_image_and_new_joints_are_scored_and_the_rest_carried(nights):
    second, third = nights["nights"][1], nights["nights"][3]
    m = third.manifest
    s2, s3 = _scores(second.run), _scores(third.run)
    before = nights["nights"][0].manifest.rows["total"]
    assert m.rows["total"] == before + 3 and m.rows["carried"] == before - 1
    changed_file = min(m.inputs)  # the first file, rewritten; and the new one: only these two are read
    assert m.rows["files_read"] == 2 and m.rows["files_carried"] == len(m.inputs) - 2
    assert m.rows["rows_read"] == m.inputs[changed_file]["rows"] + 3
    assert not s3[nights["changed"]][1] and s3[nights["changed"]][0] != s2[nights["changed"]][0]
    assert all(not s3[j][1] for j in s3 if j.startswith("new/"))
    assert sum(carried for _, carried, _ in s3.values()) == m.rows["carried"]


@pytest.mark.slow
def test_a_new_model_version_scores_everything_anew(nights):
    third, fourth = nights["nights"][3], nights["nights"][4]
    assert fourth.manifest.model_version != third.manifest.model_version
    assert fourth.manifest.rows["carried"] == 0 and fourth.manifest.carried_from is None
    assert not any(carried for _, carried, _ in _scores(fourth.run).values())


@pytest.mark.slow
def test_runs_lists_every_committed_night_with_its_counts(nights, capsys):
    assert main(["runs", "--out", nights["out"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"4 committed runs in {nights['out']}"
    third = next(line for line in lines if line.startswith("2026-11-23"))
    m = nights["nights"][3].manifest
    assert third.split()[-2:] == [str(m.rows["carried"]), str(m.rows["failed"])]
    assert storage.read_json(f"{nights['nights'][3].run}/manifest.json")["run_id"] == "2026-11-23"


@pytest.mark.slow
def test_on_s3_an_unchanged_registry_file_is_not_read_and_a_rewritten_one_is(
    ray_local, small_registry, untrained_model, s3_bucket, tmp_path
):
    fs, _ = storage.filesystem(s3_bucket)
    fs.put(f"{small_registry}/registry", f"{s3_bucket[5:]}/registry", recursive=True)
    model = untrained_model(tmp_path / "model", SMALL_MODEL)

    def night(run_id: str) -> runs.RunManifest:
        settings = scoring.ScoreConfig(f"{s3_bucket}/registry", model, f"{s3_bucket}/runs", run_id=run_id)
        return nightly.nightly(nightly.NightlyConfig(settings, ratings=f"{small_registry}/ratings")).manifest

    first, second = night("2026-12-01"), night("2026-12-02")
    files = sorted(first.inputs)
    assert second.rows["files_read"] == 0 and second.rows["files_carried"] == len(files) >= 2
    assert second.rows["carried"] == second.rows["total"] == first.rows["total"]
    table = pq.read_table(fs.open(files[0], "rb"))
    fs.pipe_file(files[0], _parquet(table.slice(0, table.num_rows - 1)))  # one row fewer: a new version
    third = night("2026-12-03")
    assert third.rows["files_read"] == 1 and third.rows["rows_read"] == table.num_rows - 1
    assert third.rows["total"] == first.rows["total"] - 1 and third.rows["carried"] == third.rows["total"]
    for m in (first, second, third):
        assert attempts(m.run) == [m.attempt]


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@pytest.mark.slow
def test_a_committed_night_reads_as_the_readme_says_with_pyarrow_pandas_and_duckdb(nights):
    import json

    import duckdb
    import pandas as pd

    run = nights["nights"][1].run
    manifest = json.load(open(f"{run}/manifest.json"))  # the README's reading, step by step
    scores = pq.read_table(f"{run}/{manifest['outputs']['scores']}")
    frame = pd.read_parquet(f"{run}/{manifest['outputs']['scores']}")
    sql = f"""
        SET VARIABLE scores = (SELECT '{run}/' || outputs.scores || '*.parquet' FROM read_json('{run}/manifest.json'));
        SELECT count(*), count(DISTINCT joint_id) FROM read_parquet(getvariable('scores'));
    """
    rows = manifest["rows"]["total"]
    assert scores.num_rows == len(frame) == rows and duckdb.sql(sql).fetchall() == [(rows, rows)]


def test_a_wrong_activity_path_fails_the_night_before_anything_is_scored(small_registry, tmp_path):
    settings = scoring.ScoreConfig(f"{small_registry}/registry", "no-model-needed", str(tmp_path / "nights"))
    config = nightly.NightlyConfig(settings, ratings=f"{small_registry}/ratings", activity=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no Parquet table at .*nowhere"):
        nightly.nightly(config)
    assert not (tmp_path / "nights").exists()  # nothing begun, nothing to clean up
