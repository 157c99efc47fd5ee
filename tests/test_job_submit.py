"""`ray job submit` of jobs/score.py to a real token-authenticated Ray head on loopback, data on the loopback S3 server.

The head is started here with `ray start --head --block` in its own process group, so that stopping it stops
exactly its processes and never the session's local Ray or anyone else's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import SMALL_MODEL, free_port

from erosion.io import runs, runtime, storage
from erosion.model import checkpoint
from erosion.model.network import ErosionCNN
from erosion.registry import synth

ROOT = Path(__file__).resolve().parents[1]


def _environment() -> dict[str, str]:
    """This process's environment (AWS_* point at the loopback S3 server) with no Ray address or token of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # this Python's `ray`, `python`
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # listen on 127.0.0.1 only
    return env


def _wait_for_jobs_api(address: str, token: Path, head: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Wait until the head's job API lists jobs for a client with the token; fail early if the head died.

    An answer alone is not enough: the dashboard refuses (401) before its job module is up.
    """
    bearer = {"Authorization": f"Bearer {token.read_text().strip()}"}
    request = urllib.request.Request(f"{address}/api/jobs/", headers=bearer)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except OSError:  # not listening yet, the job module not loaded, or an HTTP error meanwhile
            time.sleep(0.5)
    pytest.fail(f"the Ray head's job API did not answer at {address} within {timeout} s")


def _stop(head: subprocess.Popen) -> None:
    """Stop ``ray start --block`` (it stops what it started), then kill what is left of its process group, only that."""
    head.terminate()
    try:
        head.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # the group it leads (start_new_session): the head's processes alone
    except ProcessLookupError:
        pass
    head.wait()


@dataclass
class Head:
    """A Ray head started by a test, and how a client with the token reaches it."""

    address: str  # the dashboard's URL, for `ray job submit --address`
    gcs: str  # host:port that drivers join (RAY_ADDRESS inside a job)
    env: dict[str, str]  # a client environment with the token (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH)
    token: Path  # the token file, 0600, outside the repository and ~/.ray
    logs: list[Path]  # `ray start`'s output and the head's temp dir (session logs)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[Head]:
    """A Ray head with token authentication on 127.0.0.1; yields its addresses and a client environment."""
    home = tmp_path / "home"  # the token is generated here, never in the user's ~/.ray
    env = _environment()
    subprocess.run(
        ["ray", "get-auth-token", "--generate"],
        env={**env, "HOME": str(home)},
        stdout=subprocess.DEVNULL,  # the command prints the token
        stderr=subprocess.DEVNULL,
        check=True,
    )
    token = home / ".ray" / "auth_token"
    token.chmod(0o600)  # Ray writes it world-readable
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    gcs, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-head-")  # short: Ray's socket paths must fit in 107 bytes
    log = tmp_path / "head.log"
    command = [
        "ray", "start", "--head", "--block", "--disable-usage-stats", "--num-cpus", "2",
        "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--temp-dir", temp_dir,
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
        "--object-store-memory", str(256 * 2**20),
    ]  # fmt: skip
    with open(log, "w") as out:
        head = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        _wait_for_jobs_api(address, token, head, log)
        yield Head(address, f"127.0.0.1:{gcs}", env, token, [log, Path(temp_dir)])
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _registry_and_model(bucket: str) -> tuple[str, str, int]:
    """A one-visit synthetic registry and an untrained reduced model on S3: (registry, model, rows)."""
    synth.generate(synth.SynthConfig(patients=1, out=f"{bucket}/data", seed=1, body_parts=("hand_left",), max_visits=1))
    torch.manual_seed(0)
    card = checkpoint.ModelCard(
        "", SMALL_MODEL, epoch=0, history=[], preprocess=checkpoint.preprocess_settings(SMALL_MODEL)
    )
    checkpoint.write(f"{bucket}/model", ErosionCNN(SMALL_MODEL).eval(), card)
    registry = f"{bucket}/data/registry"
    return registry, f"{bucket}/model", sum(storage.row_counts(registry).values())


@pytest.mark.slow
def test_score_job_submitted_with_the_token_commits_its_run_on_s3_and_without_it_is_refused(
    ray_head: Head, s3_bucket: str, tmp_path: Path
):
    registry, model, rows = _registry_and_model(s3_bucket)
    submit = [
        "ray", "job", "submit", "--address", ray_head.address,
        "--runtime-env", "cluster/runtime_env.yaml", "--working-dir", ".", "--",
        "python", "jobs/score.py", "--registry", registry, "--model", model, "--out", f"{s3_bucket}/runs",
        "--run-id", "submitted", "--batch-size", "16", "--verbose",
    ]  # fmt: skip

    stranger = {**_environment(), "HOME": str(tmp_path / "stranger")}  # no token file, no RAY_AUTH_MODE
    refused = subprocess.run(submit, cwd=ROOT, env=stranger, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "AuthenticationError" in refused.stderr, refused.stderr[-3000:]
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{ray_head.address}/api/jobs/", timeout=10)
    assert answer.value.code == 401

    done = subprocess.run(submit, cwd=ROOT, env=ray_head.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert f"Connecting to existing Ray cluster at address: {ray_head.gcs}" in done.stdout  # joined it (--verbose)

    run = f"{s3_bucket}/runs/submitted"
    manifest = runs.manifest(run)
    assert manifest.rows["total"] == rows == 10 and manifest.rows["scored"] + manifest.rows["failed"] == rows
    assert sum(storage.row_counts(runs.manifest(run).path("scores")).values()) == rows
    assert sum(storage.row_counts(runs.manifest(run).path("rau")).values()) == 1

    secret = ray_head.token.read_bytes()
    outputs = [refused.stdout, refused.stderr, done.stdout, done.stderr]
    logs = [f for path in ray_head.logs for f in (path, *path.rglob("*")) if f.is_file()]
    leaked = any(secret in text.encode() for text in outputs) or any(secret in f.read_bytes() for f in logs)
    assert not leaked, "the token appears in the submit output or the head's logs"


def test_the_ray_token_is_private_from_the_moment_it_is_made(tmp_path):
    token = tmp_path / ".ray" / "auth_token"
    mask = os.umask(0)  # a plain open() would now make it 0666
    try:
        runtime.private_token(token)
    finally:
        os.umask(mask)
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    loose = tmp_path / "loose"
    loose.write_text("x")
    loose.chmod(0o644)
    runtime.private_token(loose)
    assert loose.stat().st_mode & 0o777 == 0o600 and loose.read_text() == "x"


LOCAL_RAY = """
import os, ray
from erosion.io import runtime
runtime.init_ray(num_cpus=1)
token = os.path.expanduser("~/.ray/auth_token")
print(oct(os.stat(token).st_mode & 0o777), int(ray.cluster_resources()["CPU"]), ray.get(ray.put(7)))
"""


@pytest.mark.slow
def test_a_new_local_ray_uses_the_private_token_made_for_it(tmp_path):
    env = _environment() | {"HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", LOCAL_RAY], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["0o600", "1", "7"]
