"""The cluster files: the launcher YAML against Ray's own schema, the KubeRay manifests, and a real two-node cluster."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from erosion.cli.main import parser

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
IMAGE = "ghcr.io/erosion/erosion:0.1"
SECRET_ENV = {"RAY_AUTH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}


def _launcher() -> dict:
    return yaml.safe_load((CLUSTER / "launcher.yaml").read_text())


def _validate_as_ray_up_does(config: dict) -> None:
    """What `ray up` checks before it contacts the cloud: defaults filled in, then Ray's JSON schema and rules."""
    validate_config(prepare_config(copy.deepcopy(config)))


def _manifests() -> list[dict]:
    """Every Kubernetes object in cluster/kuberay/, and the objects that ConfigMaps carry as templates."""
    objects = []
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for config_map in [o for o in objects if o["kind"] == "ConfigMap"]:
        objects += [yaml.safe_load(text) for name, text in config_map["data"].items() if name.endswith(".yaml")]
    return objects


def _ray_pods(manifest: dict) -> list[tuple[str, dict]]:
    """(role, pod spec) of every pod a RayCluster or RayJob runs Ray in: head, worker groups, job submitter."""
    spec = manifest["spec"]
    cluster = spec if manifest["kind"] == "RayCluster" else spec.get("rayClusterSpec")
    pods = []
    if cluster:
        pods.append(("head", cluster["headGroupSpec"]["template"]["spec"]))
        pods += [("worker", group["template"]["spec"]) for group in cluster["workerGroupSpecs"]]
    if manifest["kind"] == "RayJob":
        pods.append(("submitter", spec["submitterPodTemplate"]["spec"]))
    return pods


def _ray_containers(role: str | None = None) -> list[tuple[str, dict]]:
    return [
        (role_, container)
        for manifest in _manifests()
        if manifest["kind"] in ("RayCluster", "RayJob")
        for role_, pod in _ray_pods(manifest)
        if role in (None, role_)
        for container in pod["containers"]
    ]


def _env(container: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def test_launcher_yaml_validates_against_the_schema_in_the_ray_package():
    _validate_as_ray_up_does(_launcher())


def test_a_launcher_yaml_with_a_misspelt_field_fails_the_same_validation():
    broken = _launcher()
    broken["available_node_types"]["gpu_worker"]["max_worker"] = broken["available_node_types"]["gpu_worker"].pop(
        "max_workers"
    )
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validate_as_ray_up_does(broken)


def test_launcher_has_a_cpu_head_an_autoscaling_gpu_group_and_installs_this_checkout():
    config = _launcher()
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    workers = list(types.values())
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    assert [w["resources"]["GPU"] >= 1 and w["min_workers"] < w["max_workers"] for w in workers] == [True]
    assert config["file_mounts"]["~/erosion"] == "."
    assert any(re.search(r"pip install .*-e ~/erosion", command) for command in config["setup_commands"])
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)


def test_kuberay_manifests_parse_and_have_the_expected_kinds():
    kinds = sorted(m["kind"] for m in _manifests())
    expected = ["RayCluster", "RayJob", "RayJob", "CronJob", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"]
    assert kinds == sorted(expected)
    assert all(m["apiVersion"] == "ray.io/v1" for m in _manifests() if m["kind"].startswith("Ray"))


def test_every_ray_pod_runs_the_one_image_that_the_dockerfile_builds():
    images = {container["image"] for _, container in _ray_containers()}
    assert images == {IMAGE}
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"-t {IMAGE} " in dockerfile
    major_minor = ".".join(ray.__version__.split(".")[:2])
    assert re.search(rf"^FROM rayproject/ray:{re.escape(major_minor)}\.\d+-py311-gpu$", dockerfile, re.M)


def test_the_worker_group_requests_gpus_and_the_head_none():
    workers, heads = _ray_containers("worker"), _ray_containers("head")
    assert workers and heads
    for _, container in workers:
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    for _, container in heads:
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


def test_token_and_s3_credentials_come_from_secret_key_refs_only():
    for role, container in _ray_containers():
        env = _env(container)
        assert env["RAY_AUTH_MODE"]["value"] == "token", role
        needed = {"RAY_AUTH_TOKEN"} | (SECRET_ENV if role in ("head", "worker") else set())
        assert needed <= set(env), (role, needed - set(env))
    every_env = [v for m in _manifests() for c in _all_containers(m) for v in c.get("env", [])]
    for variable in every_env:
        if variable["name"] in SECRET_ENV or re.search("TOKEN|SECRET|PASSWORD", variable["name"]):
            assert "value" not in variable and variable["valueFrom"]["secretKeyRef"]["name"], variable["name"]
    assert "Secret" not in {m["kind"] for m in _manifests()}  # secrets are created by hand, never committed
    for path in [p for p in CLUSTER.rglob("*") if p.is_file()]:  # no AWS key id or Ray-style token anywhere
        assert not re.search(r"AKIA[0-9A-Z]{16}|\b[0-9a-f]{64}\b", path.read_text(errors="replace")), path


def _all_containers(node: object) -> list[dict]:
    """Every container spec anywhere in a manifest."""
    if isinstance(node, dict):
        found = [c for c in node.get("containers", []) if isinstance(c, dict)]
        return found + [c for key, value in node.items() if key != "containers" for c in _all_containers(value)]
    if isinstance(node, list):
        return [c for item in node for c in _all_containers(item)]
    return []


def test_the_nightly_scoring_job_is_a_scheduled_rayjob():
    manifests = _manifests()
    (cron,) = [m for m in manifests if m["kind"] == "CronJob"]
    assert len(cron["spec"]["schedule"].split()) == 5
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (config_map,) = [m for m in manifests if m["kind"] == "ConfigMap"]
    assert [v["configMap"]["name"] for v in pod["volumes"]] == [config_map["metadata"]["name"]]
    assert "create" in pod["containers"][0]["args"]
    nightly = [m for m in manifests if m["kind"] == "RayJob" and "jobs/nightly.py" in m["spec"]["entrypoint"]]
    assert len(nightly) == 1 and nightly[0]["metadata"]["generateName"]


def test_every_rayjob_targets_the_raycluster():
    (cluster,) = [m for m in _manifests() if m["kind"] == "RayCluster"]
    for job in [m for m in _manifests() if m["kind"] == "RayJob"]:
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}


def test_every_job_entrypoint_named_in_cluster_exists_in_jobs():
    named = {
        match
        for path in CLUSTER.rglob("*")
        if path.is_file() and path.suffix in {".yaml", ".md", ".sh", ""}
        for match in re.findall(r"python\s+(jobs/[\w-]+\.py)", path.read_text())
    }
    assert "jobs/train.py" in named and "jobs/nightly.py" in named
    assert sorted(n for n in named if not (ROOT / n).is_file()) == []


def test_every_rayjob_entrypoint_passes_its_jobs_argument_parser():
    for job in [m for m in _manifests() if m["kind"] == "RayJob"]:
        python, script, *args = shlex.split(job["spec"]["entrypoint"])
        assert python == "python" and script.startswith("jobs/")
        parser().parse_args([Path(script).stem, *args])  # exits (fails the test) on an unknown argument


def test_runtime_env_is_one_that_ray_accepts():
    content = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert ray.runtime_env.RuntimeEnv(**content)["working_dir"] == "."


DRIVER = """
import json, sys
import ray
from ray.util.state import list_actors
from erosion.registry import synth
from erosion.train import training
from erosion.train import labelled
from erosion.model.augment import NO_AUGMENTATION
from erosion.model.network import ModelConfig

address, out = sys.argv[1], sys.argv[2]
synth.generate(synth.SynthConfig(patients=4, out=f"{out}/data", seed=1))
ray.init(address=address)
result = training.train(
    training.TrainConfig(
        data=labelled.LabelSet(f"{out}/data/registry", f"{out}/data/ratings"),
        out=f"{out}/runs", name="two-nodes", epochs=1, workers=2, cpus_per_worker=2, batch_size=16,
        model=ModelConfig(input_size=64, width=0.25), augment=NO_AUGMENTATION, max_failures=0,
    )
)
workers = list_actors(address, filters=[("class_name", "=", "RayTrainWorker")], raise_on_missing_output=False)
nodes = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
with open(f"{out}/result.json", "w") as f:
    json.dump({"worker_nodes": [w.node_id for w in workers], "nodes": nodes, "history": result.card.history}, f)
"""


def _free_ports(count: int) -> int:
    """A first port P such that P .. P+count-1 are free on 127.0.0.1 (below Linux's ephemeral range)."""
    for _ in range(100):
        first = 20_000 + secrets.randbelow(12_000)
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError("no block of free ports found on 127.0.0.1")


def _running(pid: int) -> bool:
    """Whether a process runs (an exited one that its parent has not yet reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes_left(text: str, wait_s: float) -> list[int]:
    """Processes whose command line names ``text`` (Ray's name their session folder), after up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if text in cmdline.read_bytes().decode(errors="replace"):
                    found.append(int(cmdline.parent.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.slow
def test_local_two_node_cluster_trains_with_one_worker_on_each_node(tmp_path):
    """cluster/local-cluster.sh starts two nodes of 3 CPUs; a worker of 2 CPUs fits once per node.

    The driver is a subprocess (this session has its own local Ray), everything stays on 127.0.0.1, the cluster
    requires a token, and the script stops what it started even when the training fails.
    """
    state = tempfile.mkdtemp(prefix="erc-", dir="/tmp")  # short: Ray's socket paths live under it
    port = _free_ports(3)
    env = os.environ | {
        "EROSION_CLUSTER_DIR": state,
        "EROSION_CLUSTER_PORT": str(port),
        "EROSION_CPUS_PER_NODE": "3",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    script = str(CLUSTER / "local-cluster.sh")
    try:
        started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        holder = int(Path(state, "pid").read_text())
        driver = subprocess.run(
            [sys.executable, "-c", DRIVER, f"127.0.0.1:{port}", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert driver.returncode == 0, driver.stderr[-4000:]
    finally:
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert not _running(holder)
    assert _processes_left(state, wait_s=30) == []  # Ray's processes of both nodes, workers included
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["nodes"]) == 2
    assert sorted(result["worker_nodes"]) == sorted(result["nodes"])  # one worker on each node
    assert result["history"][0]["train_rows"] > 0 and result["history"][0]["val_rows"] > 0
