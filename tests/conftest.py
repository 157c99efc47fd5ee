"""Shared real parts for the suite: one local Ray, one S3-compatible server (moto) on loopback.

The AWS variables are set at import, before Ray starts, so Ray's workers reach the same server. Test modules
import the shared constants and helpers by name: ``from conftest import SMALL_MODEL, free_port``.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import socket

import pytest

from erosion.io import runs, storage
from erosion.model.network import ModelConfig

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray listens on 127.0.0.1 only


SMALL_MODEL = ModelConfig(input_size=64, width=0.25)  # the reduced CNN that tests train and score on CPU


def free_port() -> int:
    """A port free on 127.0.0.1 now (the system's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` run after all others (the secrets check reads what the others wrote)."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


def attempts(run: str, options: storage.StorageOptions | None = None) -> list[str]:
    """The names of the attempt folders in a run folder (local or ``s3://``), sorted."""
    fs, path = storage.filesystem(run, options)
    if not fs.exists(path):
        return []
    names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    return sorted(n for n in names if n.startswith(runs.ATTEMPT))


S3_PORT = free_port()
S3_SECRET = secrets.token_urlsafe(24)  # random: a test checks that no file or log the suite made holds it
os.environ.update(
    {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(proxy, None)


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A moto S3 server on 127.0.0.1; yields its endpoint."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket for one test, as an s3:// URL."""
    import s3fs

    name = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-[]")
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (2 CPUs, loopback)."""
    import ray

    from erosion.io.runtime import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def small_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small synthetic registry (12 patients) shared by read-only tests."""
    from erosion.registry import synth

    out = str(tmp_path_factory.mktemp("registry"))
    synth.generate(synth.SynthConfig(patients=12, out=out, seed=3, rows_per_file=200, rescored_fraction=0.3))
    return out


@pytest.fixture(scope="session")
def untrained_model():
    """Writes an untrained model's checkpoint (random weights, seeded) to a folder: scoring needs no good model.

    Its batch norms take their statistics from random crops, so that its answers depend on the crop.
    """
    import torch

    from erosion.model import checkpoint
    from erosion.model.network import ErosionCNN

    def write(folder, config: ModelConfig) -> str:
        torch.manual_seed(1)
        model = ErosionCNN(config)
        for layer in model.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.momentum = None  # a plain average over the batches below
        with torch.no_grad():
            for _ in range(3):
                model(torch.rand(16, 1, config.input_size, config.input_size) ** 2)
        preprocess = checkpoint.preprocess_settings(config)
        card = checkpoint.ModelCard("", config, epoch=0, history=[], preprocess=preprocess)
        checkpoint.write(str(folder), model.eval(), card)
        return str(folder)

    return write
