"""Connecting to Ray: the cluster a job was submitted to, or a local Ray kept on loopback."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import warnings
from pathlib import Path

import ray

TRACEBACK_LOGGERS = ("ray.data.exceptions", "ray.data._internal.execution.streaming_executor_state")
"""Ray Data's loggers that print the traceback of an error it takes for its own (an I/O error in its Write, say)
before raising it to the caller, which names it in one line ("nothing was committed: <cause>")."""


def init_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``, as set by ``ray job submit``); otherwise start a local Ray.

    A local Ray listens on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and ``address="local"``
    keeps it from joining a stale cluster recorded under /tmp/ray. Ray 2.60 turns token authentication on for a
    new local Ray and would write the token it generates to ``~/.ray/auth_token`` readable by everyone: the token
    is made here first, private from its creation (:func:`private_token`), and Ray uses it.
    Unless ``verbose``, Ray's own logs go only to its log files (see :func:`quiet`).
    """
    quiet(verbose)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_config=_logging(verbose), log_to_driver=verbose)
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        private_token(Path.home() / ".ray" / "auth_token")
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        configure_logging=False,
        logging_config=_logging(verbose),
        log_to_driver=verbose,
    )


def private_token(path: Path) -> None:
    """A Ray token file at ``path`` readable by its owner only: made with mode 0600 in the one call that creates
    it (no moment with a wider mode, whatever the umask), or an existing one's mode narrowed to 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return
    os.fchmod(descriptor, 0o600)  # O_CREAT's mode is masked by the umask; never widened by it
    with os.fdopen(descriptor, "w") as f:
        f.write(secrets.token_hex(32))  # as Ray makes its own: 256 random bits


def quiet(verbose: bool = False) -> None:
    """Keep Ray's log lines (all but its errors, and Ray Data's tracebacks of a failed execution: the caller names
    the error), deprecation warnings and progress bars off the terminal; the workers' output stays in Ray's log
    files under /tmp/ray. ``verbose`` lets them through, progress bars on a terminal only."""
    from ray.data import DataContext

    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(level)
    for name in TRACEBACK_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
    DataContext.get_current().enable_progress_bars = verbose and sys.stderr.isatty()
    if not verbose:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray")
        warnings.filterwarnings("ignore", category=FutureWarning, module="ray")


def _logging(verbose: bool) -> ray.LoggingConfig:
    """The log level of Ray's worker processes."""
    return ray.LoggingConfig(encoding="TEXT", log_level="INFO" if verbose else "WARNING")
