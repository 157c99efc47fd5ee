"""Every fault of a production night against the real parts: a local Ray, the loopback S3 server, real files.

What an operator sees is what these tests read: the exit code, the one-line error on stderr, and what is (or is
not) committed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import ray
from conftest import SMALL_MODEL, attempts, free_port

from erosion.cli.main import main
from erosion.core import schema
from erosion.core.faults import Faults
from erosion.io import runs, storage
from erosion.model.network import ModelConfig
from erosion.score import scoring
from erosion.workflows import nightly

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(untrained_model, tmp_path_factory) -> str:
    return untrained_model(tmp_path_factory.mktemp("faults") / "model", SMALL_MODEL)


def _registry(small_registry: str, folder, copies: int = 1) -> str:
    """A private copy of the small registry (400 rows in two files), ``copies`` times over (the same joints)."""
    os.makedirs(folder)
    for copy in range(copies):
        for name in ("part-00000", "part-00001"):
            shutil.copy(f"{small_registry}/registry/{name}.parquet", folder / f"{name}-{copy}.parquet")
    return str(folder)


def _ids(run: str) -> list[str]:
    return storage.read_table(runs.manifest(run).path("scores"), ["joint_id"])["joint_id"].to_pylist()


def test_an_empty_registry_commits_a_run_of_no_rows_and_a_report_with_nothing_to_compare(
    ray_local, small_registry, model, tmp_path
):
    os.makedirs(tmp_path / "registry")
    pq.write_table(schema.REGISTRY.empty_table(), tmp_path / "registry" / "part-0.parquet")
    settings = scoring.ScoreConfig(str(tmp_path / "registry"), model, str(tmp_path / "runs"), run_id="2026-12-01")
    night = nightly.nightly(nightly.NightlyConfig(settings, ratings=f"{small_registry}/ratings"))
    m = runs.manifest(night.run)
    assert m.rows["total"] == m.rows["scored"] == 0 and m.rows["visits"] == 0
    assert pq.read_table(m.path("scores")).num_rows == 0 and pq.read_table(m.path("rau")).num_rows == 0
    page = open(m.path("report"), encoding="utf-8").read()
    assert "nothing to compare" in page and night.report.raters == []
    assert attempts(night.run) == [m.attempt]


def test_a_registry_file_that_is_not_parquet_or_a_folder_with_none_is_named_without_a_traceback(
    ray_local, small_registry, model, tmp_path, capsys
):
    registry = _registry(small_registry, tmp_path / "registry")
    with open(f"{registry}/part-00002.parquet", "w") as f:
        f.write("joint_id,image\n1,2\n")  # a CSV under a Parquet name
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no tables here")
    for folder, said in ((registry, f"{registry}/part-00002.parquet is not a Parquet file"), (empty, "no .parquet")):
        argv = ["score", "--registry", str(folder), "--model", model, "--out", str(tmp_path / "runs")]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_s3_endpoint_is_named_at_the_start_and_nothing_is_written(ray_local, model, tmp_path, capsys):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    argv = ["nightly", "--registry", "s3://registry/r", "--model", model, "--out", str(tmp_path / "runs")]
    argv += ["--ratings", "s3://registry/ratings", "--s3-endpoint", endpoint]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot reach S3 at {endpoint} for s3://registry/r" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_wrong_credentials_are_refused_at_the_start(ray_local, model, tmp_path):
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")  # moto checks signatures after the set-up calls
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
        for _ in range(100):
            try:
                iam.create_user(UserName="nightly")
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        key = iam.create_access_key(UserName="nightly")["AccessKey"]
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        ).create_bucket(Bucket="registry")
        wrong = os.environ | {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        command = ["erosion", "score", "--registry", "s3://registry/r", "--model", model]
        command += ["--out", "s3://registry/runs", "--s3-endpoint", endpoint, "--address", _address()]
        done = subprocess.run(command, env=wrong, capture_output=True, text=True, timeout=300)
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 1
    assert f"S3 at {endpoint} refused access to s3://registry/r" in done.stderr and "Traceback" not in done.stderr


def _address() -> str:
    return ray.get_runtime_context().gcs_address


def _slow_night(registry: str, ratings: str, model: str, out: str) -> subprocess.Popen:
    """``erosion nightly`` in its own process with the paper's model at small batches: tens of seconds on CPU."""
    command = ["erosion", "nightly", "--registry", registry, "--model", model, "--out", out, "--run-id", "2026-12-02"]
    command += ["--ratings", ratings, "--batch-size", "16", "--address", _address()]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_nights_started_together_commit_once_and_the_other_says_who_holds_it(
    ray_local, small_registry, untrained_model, tmp_path
):
    registry = _registry(small_registry, tmp_path / "registry", copies=4)  # 1,600 crops: about a minute
    paper = untrained_model(tmp_path / "paper", ModelConfig())
    out, ratings = str(tmp_path / "runs"), f"{small_registry}/ratings"
    first = _slow_night(registry, ratings, paper, out)
    deadline = time.monotonic() + 120
    while not os.path.isdir(f"{out}/_lease") and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _slow_night(registry, ratings, paper, out)
    said = second.communicate(timeout=300)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    assert second.returncode == 1
    assert f"{out} is in use by run 2026-12-02 (attempt _attempt-" in said[1] and "Traceback" not in said[1]
    (night,) = runs.committed(out)
    assert attempts(night.run) == [night.attempt]  # the refused one wrote nothing
    assert sorted(_ids(night.run)) == sorted(pq.read_table(registry)["joint_id"].to_pylist())


def test_a_model_actor_that_dies_mid_run_is_restarted_and_every_row_comes_out_once(
    ray_local, small_registry, model, tmp_path
):
    marker = tmp_path / "actor-died"
    config = scoring.ScoreConfig(
        _registry(small_registry, tmp_path / "registry"),
        model,
        str(tmp_path / "runs"),
        run_id="r",
        faults=Faults(crash_model_once=str(marker)),
    )
    result = scoring.score(config)
    assert marker.exists() and result.failed == 0
    ids = _ids(result.run)
    assert len(ids) == len(set(ids)) == 400


def test_s3_gone_mid_run_fails_the_run_keeps_the_committed_one_and_the_rerun_commits_each_row_once(
    ray_local, small_registry, model, untrained_model, tmp_path
):
    from moto.server import ThreadedMotoServer

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = storage.StorageOptions(endpoint_url=endpoint)
    fs, _ = storage.filesystem("s3://night", options)
    fs.mkdir("night")
    registry = _registry(small_registry, tmp_path / "registry")
    out = "s3://night/runs"
    earlier = scoring.score(scoring.ScoreConfig(registry, model, out, run_id="n", options=options))
    before = runs.manifest(earlier.run, options)

    paper = untrained_model(tmp_path / "paper", ModelConfig())  # slow on CPU: the server stops mid-run
    command = ["erosion", "score", "--registry", registry, "--model", paper, "--out", out, "--run-id", "n"]
    command += ["--s3-endpoint", endpoint, "--batch-size", "16", "--address", _address()]
    rerun = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while len(attempts(f"{out}/n", options)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    server.stop()  # its first scores are written: the run is mid-way
    said = rerun.communicate(timeout=600)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # the same in-process store: what was written before the stop is still there
    try:
        assert rerun.returncode == 1 and "Traceback" not in said[1], said[1][-3000:]
        assert endpoint in said[1] or "nothing was committed" in said[1]
        assert runs.manifest(earlier.run, options) == before  # the committed run intact, and readable
        assert len(_ids_at(earlier.run, options)) == 400
        again = scoring.score(scoring.ScoreConfig(registry, model, out, run_id="n", options=options))
        ids = _ids_at(again.run, options)
        assert len(ids) == len(set(ids)) == 400
        assert runs.manifest(again.run, options).replaced == before.attempt
    finally:
        server.stop()


def _ids_at(run: str, options: storage.StorageOptions) -> list[str]:
    scores = runs.manifest(run, options).path("scores")
    return storage.read_table(scores, ["joint_id"], options)["joint_id"].to_pylist()
