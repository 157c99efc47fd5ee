import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from erosion.cli import flags
from erosion.cli.main import main, parser
from erosion.core.split import split_of
from erosion.io import runtime, storage
from erosion.model import checkpoint
from erosion.registry.summary import summarize
from erosion.registry.synth import SynthConfig
from erosion.train.labelled import LabelSet
from erosion.train.training import TrainConfig


@pytest.mark.slow
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


@pytest.mark.slow
def test_summary_reads_the_registry_from_s3_in_ray_workers(ray_local, small_registry, s3_bucket):
    fs, _ = storage.filesystem(s3_bucket)
    fs.put(f"{small_registry}/registry", f"{s3_bucket[5:]}/registry", recursive=True)
    fs.put(f"{small_registry}/ratings", f"{s3_bucket[5:]}/ratings", recursive=True)
    remote = summarize(f"{s3_bucket}/registry", f"{s3_bucket}/ratings")
    assert remote == summarize(f"{small_registry}/registry", f"{small_registry}/ratings")


@pytest.mark.slow
def test_demo_runs_end_to_end_and_prints_no_ray_info_line(ray_local, tmp_path, capfd):
    assert main(["demo", "--patients", "16", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out, err = capfd.readouterr()
    assert re.search(r"validation: \d+ rows, 0 problems, \d+ rows, 0 problems\n", out) and "class mix" in out
    assert "trained a reduced model" in out and "best epoch 1" in out
    assert out.count("epoch 1/1: train loss") == 1  # the epoch's line, once
    printed = out + err
    for ray_line in (" INFO ", "Reporting training result", "Starting execution of Dataset", "Deprecat"):
        assert ray_line not in printed, ray_line
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


@pytest.mark.slow
def test_console_script_synth(tmp_path):
    result = subprocess.run(
        ["erosion", "synth", "--patients", "2", "--seed", "4", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "joints/s" in result.stdout
    assert storage.read_table(str(tmp_path / "r" / "registry")).num_rows > 0


def _commands() -> list[str]:
    (commands,) = [a for a in parser()._actions if a.dest == "==SUPPRESS==" and a.choices]
    return sorted(commands.choices)


@pytest.mark.parametrize("command", ["", *_commands()])
def test_every_command_has_a_working_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"] if command else ["--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: erosion {command}".rstrip())


def test_the_flags_default_to_the_configs_own_defaults():
    args = parser().parse_args(["train", "--registry", "reg", "--ratings", "rat", "--out", "o"])
    assert flags.build(TrainConfig, args) == TrainConfig(data=LabelSet("reg", "rat"), out="o")
    args = parser().parse_args(["synth", "--patients", "3", "--out", "o"])
    assert flags.build(SynthConfig, args) == SynthConfig(patients=3, out="o")


def test_flags_set_nested_fields_tuples_and_booleans():
    argv = ["train", "--registry", "reg", "--ratings", "rat", "--out", "o", "--lr", "0.01", "--no-weighted-loss"]
    config = flags.build(
        TrainConfig, parser().parse_args([*argv, "--width", "0.25", "--zoom", "0", "--s3-region", "x"])
    )
    assert (config.learning_rate, config.weighted_loss, config.model.width, config.augment.zoom) == (
        0.01,
        False,
        0.25,
        0,
    )
    assert config.data.options.region == "x" and config.model.input_size == 150
    synth = flags.build(
        SynthConfig, parser().parse_args(["synth", "--patients", "1", "--out", "o", "--body-parts", "hand_left"])
    )
    assert synth.body_parts == ("hand_left",)
    with pytest.raises(SystemExit):
        parser().parse_args([*argv, "--arch", "resnet"])  # not one of the choices


def test_ray_datas_tracebacks_of_a_failed_execution_are_quiet_unless_verbose():
    # the loggers are named after Ray Data's modules: a module renamed in a Ray upgrade fails here, not in silence
    import logging

    from ray.data import exceptions
    from ray.data._internal.execution import streaming_executor_state

    assert {exceptions.logger.name, streaming_executor_state.logger.name} == set(runtime.TRACEBACK_LOGGERS)
    try:
        runtime.quiet(verbose=True)
        assert {logging.getLogger(n).getEffectiveLevel() for n in runtime.TRACEBACK_LOGGERS} == {logging.INFO}
    finally:
        runtime.quiet(verbose=False)
    assert {logging.getLogger(n).getEffectiveLevel() for n in runtime.TRACEBACK_LOGGERS} == {logging.CRITICAL}
