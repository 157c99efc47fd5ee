"""Holds a two-node Ray cluster on 127.0.0.1 until SIGTERM: the process behind ``cluster/local-cluster.sh``.

``ray start`` cannot do this on one host: with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (listen on 127.0.0.1 only)
it refuses to add a second node, and with it unset it rewrites 127.0.0.1 to the machine's interface address. Ray's
own single-machine multi-node helper, ``ray.cluster_utils.Cluster``, starts both nodes on loopback instead. Each
node gets a custom resource named after it (``head_node``, ``second_node``), one unit, so work can be pinned.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when Ray is imported: 127.0.0.1 only

from ray.cluster_utils import Cluster  # noqa: E402


def main() -> int:
    """Start the head and the second node, write their address to ``<dir>/address``, wait for SIGTERM."""
    args = _parser().parse_args()
    node = {"num_cpus": args.cpus, "object_store_memory": args.object_store_mib * 2**20, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(
        initialize_head=True,
        head_node_args=node
        | {
            "gcs_server_port": args.port,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": args.port + 1,
            "dashboard_agent_listen_port": args.port + 2,
            "resources": {"head_node": 1},
        },
    )
    cluster.add_node(**node, resources={"second_node": 1})
    cluster.wait_for_nodes()
    signal.signal(signal.SIGTERM, lambda *_: _stop(cluster))
    with open(os.path.join(args.dir, "address.tmp"), "w") as f:
        f.write(f"{cluster.address}\n")
    os.replace(os.path.join(args.dir, "address.tmp"), os.path.join(args.dir, "address"))
    print(f"two nodes up: RAY_ADDRESS={cluster.address}, dashboard {cluster.webui_url}", flush=True)
    while True:
        signal.pause()


def _stop(cluster: Cluster) -> None:
    cluster.shutdown()
    print("stopped both nodes", flush=True)
    sys.exit(0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True, help="state folder: the address file is written here")
    p.add_argument("--port", type=int, default=6390, help="the head's port P; the dashboard takes P+1, its agent P+2")
    p.add_argument("--cpus", type=int, default=3, help="logical CPUs per node")
    p.add_argument("--object-store-mib", type=int, default=300, help="object store per node")
    return p


if __name__ == "__main__":
    sys.exit(main())
