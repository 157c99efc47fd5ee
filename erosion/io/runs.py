"""Atomic run folders: a run writes under a staging folder and is committed only when complete.

A run's results live in ``<out>/<run_id>/``; while it runs they are written to ``<out>/_staging/<run_id>/``.
Committing moves the staging folder into place and then writes ``manifest.json``, last: a run is complete if
and only if its manifest exists (readers check it). A killed or failed run leaves only staging data, which the
next attempt of the same run replaces; re-running a committed run replaces it, its manifest removed first.
Local folders and ``s3://`` URLs alike (on S3 the move is a copy and delete, hence the manifest rule).
"""

from __future__ import annotations

import posixpath

from erosion.io import storage

MANIFEST = "manifest.json"


def run_url(out: str, run_id: str) -> str:
    """Where a committed run lives."""
    return posixpath.join(out, run_id)


def begin(out: str, run_id: str, options: storage.StorageOptions | None = None) -> str:
    """An empty staging folder for the run (an earlier attempt's staging data removed); returns its URL."""
    if not run_id or "/" in run_id or run_id.startswith((".", "_")):
        raise ValueError(f"a run id must be a plain folder name, got {run_id!r}.")
    url = posixpath.join(out, "_staging", run_id)
    fs, path = storage.filesystem(url, options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    return url


def commit(out: str, run_id: str, manifest: dict, options: storage.StorageOptions | None = None) -> str:
    """Move the run's staging folder into place and write its manifest last; returns the run's URL."""
    fs, staging = storage.filesystem(posixpath.join(out, "_staging", run_id), options)
    _, final = storage.filesystem(run_url(out, run_id), options)
    if fs.exists(final):
        if fs.exists(f"{final}/{MANIFEST}"):
            fs.rm(f"{final}/{MANIFEST}")  # uncommit first: a half-replaced run must not look complete
        fs.rm(final, recursive=True)
    for file in fs.find(staging):  # file by file: S3 has no folders to rename
        target = final + file[len(staging) :]
        fs.makedirs(posixpath.dirname(target), exist_ok=True)
        fs.mv(file, target)
    if fs.exists(staging):  # local folders stay behind empty; on S3 nothing is left
        fs.rm(staging, recursive=True)
    storage.write_json(f"{run_url(out, run_id)}/{MANIFEST}", manifest, options)
    return run_url(out, run_id)


def manifest(run: str, options: storage.StorageOptions | None = None) -> dict:
    """The manifest of a committed run; FileNotFoundError if the run is missing or was never committed."""
    fs, path = storage.filesystem(f"{run.rstrip('/')}/{MANIFEST}", options)
    if not fs.exists(path):
        raise FileNotFoundError(f"{run} is not a committed run (no {MANIFEST}).")
    return storage.read_json(f"{run.rstrip('/')}/{MANIFEST}", options)


def committed(out: str, options: storage.StorageOptions | None = None) -> list[dict]:
    """The manifests of every committed run under ``out``, oldest commit first (staging and unfinished runs skipped)."""
    fs, path = storage.filesystem(out, options)
    if not fs.exists(path):
        return []
    found = []
    for child in fs.ls(path, detail=False):
        name = posixpath.basename(child.rstrip("/"))
        if not name.startswith(("_", ".")) and fs.exists(f"{child}/{MANIFEST}"):
            found.append(manifest(run_url(out, name), options) | {"run": run_url(out, name)})
    return sorted(found, key=lambda m: (m.get("committed_at", ""), m.get("run_id", "")))
