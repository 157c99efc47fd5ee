"""Scoring on a real local Ray, real Parquet and the loopback S3 server: every row out exactly once, atomically."""

import dataclasses
import datetime
import io
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from conftest import SMALL_MODEL, attempts
from PIL import Image

from erosion.core import domain, schema
from erosion.core.faults import Faults
from erosion.io import runs, storage
from erosion.model import augment, checkpoint
from erosion.model.network import ModelConfig, predict, probabilities
from erosion.registry.preprocess import letterbox
from erosion.score import scoring

pytestmark = pytest.mark.slow  # every test scores on the session's local Ray


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _hostile_crops() -> list[tuple[str, str, bytes, str | None]]:
    """(joint_id, joint, image, expected error reason) for crops a real registry export may hold."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (200, 200), dtype=np.uint8)
    ramp = np.tile(np.linspace(0, 255, 150, dtype=np.uint8), (150, 1))
    return [
        ("h/random", "pip1", rng.bytes(3000), "cannot decode image"),
        ("h/truncated", "pip2", _encode(noise, "JPEG")[:500], "cannot decode image"),
        ("h/empty", "pip3", b"", "empty image"),
        ("h/gif", "pip4", _encode(noise, "GIF"), "unsupported format"),
        ("h/knee", "knee", _encode(ramp, "JPEG"), "invalid joint"),
        ("h/png16", "pip5", _encode((np.arange(120 * 90).reshape(90, 120) * 6).astype(np.uint16), "PNG"), None),
        ("h/rgb", "mcp1", _encode(np.dstack([ramp, ramp.T, noise[:150, :150]]), "JPEG"), None),
        ("h/tiny", "mcp2", _encode(np.array([[0, 128, 255]] * 3, np.uint8), "PNG"), None),
        ("h/huge", "mcp3", _encode(rng.integers(0, 255, (4000, 4000), dtype=np.uint8), "JPEG", quality=50), None),
        ("h/wide", "mcp4", _encode(np.tile(ramp[:1], (20, 14)), "JPEG"), None),
        ("h/plain", "mcp5", _encode(ramp, "PNG"), None),
    ]


def _write_registry(folder, crops, files: int = 2) -> str:
    rows = {
        "joint_id": [c[0] for c in crops],
        "patient_id": ["p1"] * len(crops),
        "visit_date": [datetime.date(2020, 1, 1)] * len(crops),
        "sop_iuid": ["s1"] * len(crops),
        "body_part": ["hand_left"] * len(crops),
        "joint": [c[1] for c in crops],
        "image": [c[2] for c in crops],
    }
    table = pa.table(rows, schema=schema.REGISTRY)
    os.makedirs(folder, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(table.num_rows), files)):
        pq.write_table(table.take(part), f"{folder}/part-{i}.parquet")
    return str(folder)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, untrained_model) -> tuple[str, str]:
    """A registry of hostile crops and a model: (registry folder, model folder)."""
    root = tmp_path_factory.mktemp("hostile")
    return _write_registry(root / "registry", _hostile_crops()), untrained_model(root / "model", SMALL_MODEL)


@pytest.fixture(scope="module")
def hostile_run(ray_local, hostile, tmp_path_factory) -> scoring.ScoreResult:
    registry, model = hostile
    out = str(tmp_path_factory.mktemp("scores"))
    return scoring.score(scoring.ScoreConfig(registry, model, out, run_id="hostile", batch_size=4))


def test_every_hostile_row_comes_out_once_and_valid_crops_score_as_one_by_one(hostile, hostile_run):
    crops = {c[0]: c for c in _hostile_crops()}
    scores = storage.read_table(runs.manifest(hostile_run.run).path("scores")).to_pylist()
    assert sorted(r["joint_id"] for r in scores) == sorted(crops)  # exactly once each
    model, card = checkpoint.load(hostile[1])
    valid = np.array([row["probs"] for row in scores if row["error"] is None])
    assert len(valid) == 6 and valid.std(axis=0).max() > 0.01  # the answers depend on the crop
    for row in scores:
        reason = crops[row["joint_id"]][3]
        assert row["run_id"] == "hostile" and row["model_version"] == card.model_version
        if reason is not None:
            assert row["error"].startswith(reason + ": "), row
            assert row["probs"] is None and row["ratingen_pred"] is None and row["ratingen_expected"] is None
            continue
        assert row["erosion_pct_pred"] is None and row["ratingen_from_pct"] is None  # the stages head has no %
        assert row["error"] is None, row
        alone = probabilities(model, letterbox(crops[row["joint_id"]][2], 64)[None])[0]
        np.testing.assert_allclose(row["probs"], alone, atol=1e-5)
        assert row["ratingen_pred"] == int(np.argmax(alone))
        assert row["ratingen_expected"] == pytest.approx(float(np.dot(np.arange(6), alone)), abs=1e-5)


def test_test_time_augmentation_scores_the_mean_over_fixed_views(ray_local, hostile, hostile_run, tmp_path):
    registry, model_url = hostile
    config = scoring.ScoreConfig(registry, model_url, str(tmp_path), run_id="tta", batch_size=4, tta=3, tta_seed=7)
    run = scoring.score(config).run
    crops = {c[0]: c for c in _hostile_crops()}
    plain = {
        r["joint_id"]: r["probs"] for r in storage.read_table(runs.manifest(hostile_run.run).path("scores")).to_pylist()
    }
    model, _ = checkpoint.load(model_url)
    views = augment.views(3, seed=7)
    scored = [r for r in storage.read_table(runs.manifest(run).path("scores")).to_pylist() if r["error"] is None]
    assert len(scored) == 6 and runs.manifest(run).config["tta"] == 3
    for row in scored:
        alone = probabilities(model, letterbox(crops[row["joint_id"]][2], 64)[None], views)[0]
        np.testing.assert_allclose(row["probs"], alone, atol=1e-5)
        assert not np.allclose(row["probs"], plain[row["joint_id"]], atol=1e-4)  # the views changed the answer


def test_a_calibrated_model_scores_calibrated_probabilities_and_keeps_its_own_argmax_stage(
    ray_local, hostile, tmp_path
):
    model, card = checkpoint.load(hostile[1])
    shift = [0.0, 1.5, -1.0, 2.5, 0.5, -3.0]  # large enough to move many a crop's argmax
    card.calibration = {"temperature": 2.0, "shift": shift}
    calibrated_url = str(tmp_path / "calibrated")
    checkpoint.write(calibrated_url, model, card)
    run = scoring.score(scoring.ScoreConfig(hostile[0], calibrated_url, str(tmp_path / "runs"), batch_size=4)).run
    crops = {c[0]: c for c in _hostile_crops()}
    scored = [r for r in storage.read_table(runs.manifest(run).path("scores")).to_pylist() if r["error"] is None]
    moved = 0
    for row in scored:
        raw = probabilities(model, letterbox(crops[row["joint_id"]][2], 64)[None])[0].astype(np.float64)
        expected = np.exp(np.log(raw) / 2.0 + shift)
        expected /= expected.sum()  # softmax(log p / T + shift), written out
        np.testing.assert_allclose(row["probs"], expected, atol=1e-5)
        assert row["ratingen_expected"] == pytest.approx(float(np.dot(np.arange(6), expected)), abs=1e-5)
        assert row["ratingen_pred"] == int(np.argmax(raw))  # the model's own stage, not the calibrated argmax
        moved += int(np.argmax(expected) != np.argmax(raw))
    assert moved > 0  # the test would not see a stage taken from the calibrated probabilities otherwise


def test_a_cdf_head_scores_its_percent_and_the_percents_stage_beside_the_stage_probabilities(
    ray_local, hostile, untrained_model, tmp_path
):
    model_url = untrained_model(tmp_path / "cdf", dataclasses.replace(SMALL_MODEL, head="cdf"))
    config = scoring.ScoreConfig(hostile[0], model_url, str(tmp_path / "runs"), run_id="cdf", batch_size=4, tta=2)
    rows = storage.read_table(runs.manifest(scoring.score(config).run).path("scores")).to_pylist()
    crops = {c[0]: c for c in _hostile_crops()}
    model, _ = checkpoint.load(model_url)
    scored = [r for r in rows if r["error"] is None]
    assert len(rows) == len(crops) and len(scored) == 6
    assert all(r["erosion_pct_pred"] is None and r["ratingen_from_pct"] is None for r in rows if r["error"])
    for row in scored:
        alone = predict(model, letterbox(crops[row["joint_id"]][2], 64)[None], augment.views(2, seed=0))[0]
        np.testing.assert_allclose(row["probs"], alone[:6], atol=1e-5)
        assert row["erosion_pct_pred"] == pytest.approx(alone[6], abs=1e-3)
        assert row["ratingen_from_pct"] == domain.ratingen_stage(row["erosion_pct_pred"])
        assert row["ratingen_pred"] == int(np.argmax(alone[:6]))


def test_the_run_is_committed_with_counts_reasons_and_rau(hostile_run):
    manifest = runs.manifest(hostile_run.run)
    assert (manifest.rows["total"], manifest.rows["scored"], manifest.rows["failed"]) == (11, 6, 5)
    assert manifest.errors == {
        "cannot decode image": 2,
        "empty image": 1,
        "unsupported format": 1,
        "invalid joint": 1,
    }
    assert hostile_run.errors == manifest.errors and len(hostile_run.examples) == 5
    assert sum(manifest.input_rows.values()) == 11 and manifest.model_version == hostile_run.model_version
    scores = storage.read_table(runs.manifest(hostile_run.run).path("scores"))
    visit = storage.read_table(runs.manifest(hostile_run.run).path("rau")).to_pylist()
    assert len(visit) == 1
    stage_sum = int(np.nansum(scores["ratingen_pred"].to_numpy(zero_copy_only=False).astype(float)))
    assert visit[0]["joints_scored"] == 6 and visit[0]["joints_failed"] == 5 and visit[0]["stage_sum"] == stage_sum
    assert visit[0]["rau"] == pytest.approx(stage_sum * 38 / 6)
    assert visit[0]["joints"] == [f"hand_left/{j}" for j in ("mcp1", "mcp2", "mcp3", "mcp4", "mcp5", "pip5")]
    assert attempts(hostile_run.run) == [manifest.attempt]


def test_scoring_reads_and_writes_s3(hostile, hostile_run, s3_bucket):
    registry, model = hostile
    fs, _ = storage.filesystem(s3_bucket)
    fs.put(registry, f"{s3_bucket[5:]}/registry", recursive=True)
    fs.put(model, f"{s3_bucket[5:]}/model", recursive=True)
    config = scoring.ScoreConfig(f"{s3_bucket}/registry", f"{s3_bucket}/model", f"{s3_bucket}/runs", run_id="s3")
    result = scoring.score(config)
    assert result.run == f"{s3_bucket}/runs/s3" and runs.manifest(result.run).rows["total"] == 11
    remote = storage.read_table(runs.manifest(result.run).path("scores")).sort_by("joint_id")
    local = storage.read_table(runs.manifest(hostile_run.run).path("scores")).sort_by("joint_id")
    floats = ["run_id", "source_file", "probs", "ratingen_expected"]  # batches of another size round differently
    assert remote.drop_columns(floats).equals(local.drop_columns(floats))
    for a, b in zip(remote["source_file"].to_pylist(), local["source_file"].to_pylist(), strict=True):
        assert a.startswith(f"{s3_bucket[5:]}/registry/") and a.split("/")[-1] == b.split("/")[-1]
    for column in floats[2:]:
        for a, b in zip(remote[column].to_pylist(), local[column].to_pylist(), strict=True):
            assert (a is None and b is None) or np.allclose(a, b, atol=1e-5), (column, a, b)
    assert storage.read_table(runs.manifest(result.run).path("rau")).num_rows == 1
    assert attempts(result.run) == [runs.manifest(result.run).attempt]


def test_a_retried_task_neither_drops_nor_duplicates_a_row(ray_local, small_registry, hostile, tmp_path):
    marker = tmp_path / "crashed"
    config = scoring.ScoreConfig(
        f"{small_registry}/registry",
        hostile[1],
        str(tmp_path / "out"),
        run_id="r",
        faults=Faults(crash_decode_once=str(marker)),
    )
    result = scoring.score(config)
    assert marker.exists()  # a decode task's worker died once, and Ray ran the task again
    ids = storage.read_table(runs.manifest(result.run).path("scores"), ["joint_id"])["joint_id"].to_pylist()
    expected = storage.read_table(f"{small_registry}/registry", ["joint_id"])["joint_id"].to_pylist()
    assert sorted(ids) == sorted(expected) and result.failed == 0
    assert "faults" not in runs.manifest(result.run).config  # a test hook, never recorded


def test_a_registry_of_the_wrong_schema_is_refused_before_any_work(ray_local, hostile, tmp_path):
    table = pq.read_table(f"{hostile[0]}/part-0.parquet").drop_columns(["image"])
    os.makedirs(tmp_path / "bad")
    pq.write_table(table, tmp_path / "bad" / "part-0.parquet")
    shutil.copy(f"{hostile[0]}/part-1.parquet", tmp_path / "bad" / "part-1.parquet")
    with pytest.raises(ValueError, match=r"part-0.parquet: missing column 'image'"):
        scoring.score(scoring.ScoreConfig(str(tmp_path / "bad"), hostile[1], str(tmp_path / "out"), run_id="x"))
    assert not (tmp_path / "out" / "x").exists()


def test_a_killed_run_commits_nothing_and_the_rerun_commits_everything(
    ray_local, small_registry, untrained_model, tmp_path
):
    registry = tmp_path / "registry"
    os.makedirs(registry)
    for name in ("part-00000.parquet", "part-00001.parquet"):  # 400 rows
        shutil.copy(f"{small_registry}/registry/{name}", registry / name)
    model = untrained_model(tmp_path / "paper", ModelConfig())  # the paper's model: slow on CPU, the kill lands mid-run
    out = tmp_path / "out"
    command = ["erosion", "score", "--registry", str(registry), "--model", model, "--out", str(out)]
    command += ["--run-id", "night", "--batch-size", "16", "--address", ray.get_runtime_context().gcs_address]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not any(out.glob("night/_attempt-*/scores/*.parquet")) and time.monotonic() < deadline:
            assert driver.poll() is None, "the scoring run ended before it could be killed"
            time.sleep(0.05)
        assert time.monotonic() < deadline, "no scores were staged in time"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    (killed,) = attempts(str(out / "night"))  # some scores were written, but only to the attempt's folder
    with pytest.raises(FileNotFoundError, match="not a committed run"):
        runs.manifest(str(out / "night"))

    result = scoring.score(scoring.ScoreConfig(str(registry), model, str(out), run_id="night", batch_size=64))
    assert runs.manifest(result.run).rows["total"] == 400 and result.scored == 400
    ids = storage.read_table(runs.manifest(result.run).path("scores"), ["joint_id"])["joint_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 400
    assert attempts(result.run) == [runs.manifest(result.run).attempt] != [killed]  # the rerun removed the leftovers
