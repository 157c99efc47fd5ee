"""Run folders committed atomically, safe when runs of one output folder overlap or fail mid-way.

A run's results live in ``<out>/<run_id>/``: its manifest, ``manifest.json``, names the attempt folder that holds
them (``<out>/<run_id>/_attempt-<time>-<random>/``; the manifest's ``outputs`` are paths relative to the run
folder). A run is complete if and only if its manifest exists (readers check it), and it is committed by one
atomic write of the manifest (a rename on local disk, one PUT on S3), last, after everything the attempt wrote.

- One run at a time writes into an output folder: ``begin`` takes the folder's lease (``erosion.io.leases``);
  a second run stops with ``leases.Held``, naming the holder, before it writes anything.
- Every attempt writes into a folder of its own, which no other attempt reads or removes while it runs.
- Re-running a committed run writes a new attempt beside the committed one; the manifest's rewrite switches
  readers over, so the night always has a complete run (also when the process is killed during the commit).
- Leftovers (attempts never committed, and attempts superseded before the one the manifest replaced) are
  removed by a later run holding the lease, never by a concurrent one.

Local folders and ``s3://`` URLs alike.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import posixpath
import secrets
from dataclasses import dataclass, field

from erosion.io import leases, storage

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ATTEMPT = "_attempt-"  # the prefix of attempt folders


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
    model: str = ""  # the checkpoint scored with (or each body part's: ``models``)
    model_version: str = ""
    models: dict[str, dict] = field(default_factory=dict)  # body part -> its model folder, version and joints
    model_epoch: int = -1
    registry: str = ""
    ratings: str = ""
    raters: list[str] = field(default_factory=list)
    scores: str = ""  # a report's scoring run
    input_rows: dict[str, int] = field(default_factory=dict)  # registry file -> rows, as scored
    inputs: dict = field(default_factory=dict)  # the nightly's snapshot of the registry's files
    carried_from: str | None = None  # the run whose scores of unchanged joints were carried over
    errors: dict[str, int] = field(default_factory=dict)  # failed rows by reason
    outputs: dict[str, str] = field(default_factory=dict)  # what -> path relative to the run folder
    attempt: str = ""  # the attempt folder holding the outputs
    replaced: str = ""  # the attempt this commit replaced (kept for readers until the next commit)
    files: dict[str, int] = field(default_factory=dict)  # table -> Parquet files written
    versions: dict[str, str] = field(default_factory=dict)  # of the libraries that made it
    alerts: list[dict] = field(default_factory=list)  # a nightly's monitoring alerts (``monitoring.Alert``)
    monitored_against: list[str] = field(default_factory=list)  # the reference nights it was compared with
    run: str = ""  # where it was read from (not written)

    def to_json(self) -> dict:
        """The manifest as written."""
        content = dataclasses.asdict(self)
        content.pop("run")
        return content

    def path(self, output: str) -> str:
        """Where one of the run's outputs (``scores``, ``rau``, ``report``...) is."""
        return posixpath.join(self.run, self.outputs[output])

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


@dataclass
class Attempt:
    """One attempt at a run: the folder it writes into and the lease that lets it commit."""

    out: str
    run_id: str
    name: str  # the attempt folder's name
    lease: leases.Lease
    options: storage.StorageOptions | None = None

    @property
    def run(self) -> str:
        return run_url(self.out, self.run_id)

    @property
    def url(self) -> str:
        """The attempt's folder: write the run's outputs here."""
        return posixpath.join(self.run, self.name)

    def output(self, name: str) -> str:
        """The manifest's path of an output written to ``<url>/<name>``, relative to the run folder."""
        return f"{self.name}/{name}"

    def commit(self, manifest: RunManifest) -> RunManifest:
        """Commit the run: its manifest written last, in one atomic write; returns the manifest as committed."""
        self.lease.check()
        try:
            replaced = RunManifest.from_json(storage.read_json(f"{self.run}/{MANIFEST}", self.options)).attempt
        except FileNotFoundError:
            replaced = ""
        committed = dataclasses.replace(manifest, attempt=self.name, replaced=replaced, run=self.run)
        storage.write_atomic(f"{self.run}/{MANIFEST}", storage.encode_json(committed.to_json()), self.options)
        self.lease.release()
        return committed

    def abandon(self) -> None:
        """Give the lease back after a failure; what the attempt wrote stays until a later run removes it."""
        try:
            self.lease.release()
        except OSError as error:  # the storage is gone: the lease expires on its own
            log.warning("could not release the lease of %s: %s", self.out, error)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()


def begin(
    out: str,
    run_id: str,
    options: storage.StorageOptions | None = None,
    lease_seconds: float = leases.SECONDS,
) -> Attempt:
    """Take the output folder's lease, remove earlier runs' leftovers, and open a new attempt at ``run_id``."""
    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith((".", "_")):
        raise ValueError(f"a run id must be a plain folder name, got {run_id!r}.")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{ATTEMPT}{stamp}-{secrets.token_hex(4)}"
    lease = leases.acquire(out, run_id, name, lease_seconds, options)
    try:
        clean(out, options)
    except BaseException:
        lease.release()
        raise
    return Attempt(out, run_id, name, lease, options)


def clean(out: str, options: storage.StorageOptions | None = None) -> list[str]:
    """Remove attempts that no manifest names (never committed, or superseded twice); the caller holds the lease."""
    fs, path = storage.filesystem(out, options)
    if not fs.exists(path):
        return []
    removed = []
    for run_id in _children(fs, path):
        run = run_url(out, run_id)
        attempts = [a for a in _children(fs, f"{path}/{run_id}") if a.startswith(ATTEMPT)]
        if not attempts:
            continue
        keep = set()
        if fs.exists(f"{path}/{run_id}/{MANIFEST}"):
            current = RunManifest.from_json(storage.read_json(f"{run}/{MANIFEST}", options))
            keep = {current.attempt, current.replaced}
        for attempt in set(attempts) - keep:
            fs.rm(f"{path}/{run_id}/{attempt}", recursive=True)
            removed.append(f"{run}/{attempt}")
    if removed:
        log.info("removed %d leftover attempt folders under %s", len(removed), out)
    return removed


def _children(fs, path: str) -> list[str]:
    """The names of the folders in a folder."""
    return [posixpath.basename(c["name"].rstrip("/")) for c in fs.ls(path, detail=True) if c["type"] == "directory"]


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
