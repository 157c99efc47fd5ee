"""Atomic run folders: a run writes under a staging folder and is committed only when complete.

A run's results live in ``<out>/<run_id>/``; while it runs they are written to ``<out>/_staging/<run_id>/``.
Committing moves the staging folder into place and then writes ``manifest.json``, last: a run is complete if
and only if its manifest exists (readers check it). A killed or failed run leaves only staging data, which the
next attempt of the same run replaces; re-running a committed run replaces it, its manifest removed first.
Local folders and ``s3://`` URLs alike (on S3 the move is a copy and delete, hence the manifest rule).
"""

from __future__ import annotations

import dataclasses
import datetime
import posixpath
from dataclasses import dataclass, field

from erosion.io import storage

MANIFEST = "manifest.json"


@dataclass
class RunManifest:
    """What a run made and from what: ``manifest.json`` of a run folder (score, nightly, report) or of a
    registry (synth, ingest). The keys are these fields; ``run`` is where it was read from, never written."""

    kind: str  # synth, ingest, score, nightly or report
    run_id: str = ""
    committed_at: str = ""  # UTC, ISO 8601
    rows: dict[str, int] = field(
        default_factory=dict
    )  # counts; a scoring run's: total, scored, failed, carried, visits
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by phase, and "total"
    config: dict = field(default_factory=dict)  # the settings it was made with (injected faults never)
    model: str = ""  # the checkpoint scored with
    model_version: str = ""
    model_epoch: int = -1
    registry: str = ""
    ratings: str = ""
    raters: list[str] = field(default_factory=list)
    scores: str = ""  # a report's scoring run
    input_rows: dict[str, int] = field(default_factory=dict)  # registry file -> rows, as scored
    inputs: dict = field(default_factory=dict)  # the nightly's snapshot of the registry's files
    carried_from: str | None = None  # the run whose scores of unchanged joints were carried over
    errors: dict[str, int] = field(default_factory=dict)  # failed rows by reason
    outputs: dict[str, str] = field(default_factory=dict)  # what -> path inside the folder
    files: dict[str, int] = field(default_factory=dict)  # table -> Parquet files written
    versions: dict[str, str] = field(default_factory=dict)  # of the libraries that made it
    run: str = ""  # where it was read from (not written)

    def to_json(self) -> dict:
        """The manifest as written."""
        content = dataclasses.asdict(self)
        content.pop("run")
        return content

    @classmethod
    def from_json(cls, content: dict, run: str = "") -> RunManifest:
        """A manifest as read; a key it does not know is an error (a manifest of another version)."""
        unknown = set(content) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{run or 'a manifest'}: unknown manifest keys {sorted(unknown)}.")
        return cls(**content, run=run)


def now() -> str:
    """The commit time as manifests record it: UTC, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


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


def commit(out: str, run_id: str, manifest: RunManifest, options: storage.StorageOptions | None = None) -> str:
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
    storage.write_json(f"{run_url(out, run_id)}/{MANIFEST}", manifest.to_json(), options)
    return run_url(out, run_id)


def manifest(run: str, options: storage.StorageOptions | None = None) -> RunManifest:
    """The manifest of a committed run; FileNotFoundError if the run is missing or was never committed."""
    fs, path = storage.filesystem(f"{run.rstrip('/')}/{MANIFEST}", options)
    if not fs.exists(path):
        raise FileNotFoundError(f"{run} is not a committed run (no {MANIFEST}).")
    return RunManifest.from_json(storage.read_json(f"{run.rstrip('/')}/{MANIFEST}", options), run)


def committed(out: str, options: storage.StorageOptions | None = None) -> list[RunManifest]:
    """The manifests of every committed run under ``out``, oldest commit first (staging and unfinished runs skipped)."""
    fs, path = storage.filesystem(out, options)
    if not fs.exists(path):
        return []
    found = []
    for child in fs.ls(path, detail=False):
        name = posixpath.basename(child.rstrip("/"))
        if not name.startswith(("_", ".")) and fs.exists(f"{child}/{MANIFEST}"):
            found.append(manifest(run_url(out, name), options))
    return sorted(found, key=lambda m: (m.committed_at, m.run_id))
