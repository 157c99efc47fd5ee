"""Connecting to Ray: the cluster a job was submitted to, or a local Ray kept on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``, as set by ``ray job submit``); otherwise start a local Ray.

    A local Ray listens on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and ``address="local"``
    keeps it from joining a stale cluster recorded under /tmp/ray. Ray 2.60 turns token authentication on for a
    new local Ray and writes the token it generates to ``~/.ray/auth_token`` readable by everyone: it is made 0600.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False)
    token = Path.home() / ".ray" / "auth_token"
    if token.exists() and token.stat().st_mode & 0o077:
        token.chmod(0o600)
