import subprocess

import numpy as np
import pandas as pd

from erosion.cli.main import main
from erosion.core.split import split_of
from erosion.io import storage
from erosion.model import checkpoint
from erosion.registry.summary import summarize


def test_summary_on_ray_matches_a_plain_count(ray_local, small_registry):
    summary = summarize(f"{small_registry}/registry", f"{small_registry}/ratings", seed=0)
    registry = storage.read_table(f"{small_registry}/registry", columns=["patient_id", "visit_date"]).to_pandas()
    ratings = storage.read_table(f"{small_registry}/ratings").to_pandas()
    stages = ratings.loc[ratings["rater"] == "registry", "ratingen"]
    assert summary.joints == len(registry) == summary.rated
    assert summary.patients == registry["patient_id"].nunique()
    assert summary.visits == len(registry.drop_duplicates())
    np.testing.assert_allclose(summary.class_mix, np.bincount(stages, minlength=6) / len(stages))
    split = registry["patient_id"].map(lambda p: split_of(p, 0))
    assert summary.split_joints == {s: int((split == s).sum()) for s in ("train", "val", "test")}
    assert sum(summary.split_patients.values()) == summary.patients


def test_summary_reads_the_registry_from_s3_in_ray_workers(ray_local, small_registry, s3_bucket):
    fs, _ = storage.filesystem(s3_bucket)
    fs.put(f"{small_registry}/registry", f"{s3_bucket[5:]}/registry", recursive=True)
    fs.put(f"{small_registry}/ratings", f"{s3_bucket[5:]}/ratings", recursive=True)
    remote = summarize(f"{s3_bucket}/registry", f"{s3_bucket}/ratings")
    assert remote == summarize(f"{small_registry}/registry", f"{small_registry}/ratings")


def test_demo_runs_end_to_end(ray_local, tmp_path, capsys):
    assert main(["demo", "--patients", "16", "--epochs", "1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "validation:" in printed and "0 problems" in printed and "class mix" in printed
    assert "trained a reduced model" in printed and "best epoch 1" in printed
    assert (tmp_path / "manifest.json").exists()
    assert checkpoint.read_card(str(tmp_path / "runs" / "demo")).epoch == 0


def test_validate_command_exits_1_and_writes_the_report_on_bad_input(tmp_path, small_registry):
    registry = storage.read_table(f"{small_registry}/registry").to_pandas().head(20)
    registry.loc[3, "joint"] = "knee"
    (tmp_path / "bad").mkdir()
    registry.to_parquet(tmp_path / "bad" / "part-0.parquet")
    code = main(["validate", "--registry", str(tmp_path / "bad"), "--report", str(tmp_path / "problems")])
    assert code == 1
    problems = pd.read_parquet(tmp_path / "problems")
    assert problems[["row", "column"]].values.tolist() == [[3, "joint"]]


def test_console_script_synth(tmp_path):
    result = subprocess.run(
        ["erosion", "synth", "--patients", "2", "--seed", "4", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "joints/s" in result.stdout
    assert storage.read_table(str(tmp_path / "r" / "registry")).num_rows > 0
