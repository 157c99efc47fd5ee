"""A lease on an output folder: one run at a time writes runs into it, and a holder that died stops holding it.

The lease of ``<out>`` is the newest of ``<out>/_lease/<generation>.json``. A run takes it by creating the next
generation's file by conditional create (``storage.create_exclusive``: ``O_EXCL`` semantics on local disk,
``If-None-Match: "*"`` on S3), which at most one of any number of runs racing for it can do, and only while the
newest generation is released or expired. The holder renews its file every third of the lease from a thread
(``seconds`` is how long a holder that stopped renewing, because it was killed, blocks others) and marks it
released when it ends. A holder that finds a newer generation than its own has lost the lease (it did not renew
in time) and must not commit. Expiry compares UTC clocks: hosts that share an output folder keep them in sync.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import posixpath
import socket
import threading
from dataclasses import dataclass

from erosion.io import storage

FOLDER = "_lease"
SECONDS = 600.0  # a killed holder blocks the folder this long at most
KEEP = 4  # generations kept (the newest and a few before it, for the record)


class Held(RuntimeError):
    """Another run holds the lease: its message names the run, the host and process, and since when."""


@dataclass(frozen=True)
class Record:
    """One generation's file."""

    holder: str  # the attempt that holds it
    run_id: str
    host: str
    pid: int
    since: str  # UTC, ISO 8601
    expires: str
    released: bool = False

    def alive(self, now: datetime.datetime) -> bool:
        """Held: not released, not expired, and not a process of this host that has died."""
        if self.released or datetime.datetime.fromisoformat(self.expires) <= now:
            return False
        return self.host != socket.gethostname() or _running(self.pid)

    def describe(self) -> str:
        return (
            f"run {self.run_id} (attempt {self.holder}, process {self.pid} on {self.host}) since {self.since}; "
            f"its lease expires at {self.expires} unless renewed"
        )


class Lease:
    """A held lease: renewed in the background until released."""

    def __init__(self, out: str, generation: int, record: Record, seconds: float, options) -> None:
        self.out, self.generation, self.record = out, generation, record
        self.seconds, self.options = seconds, options
        self.lost = ""  # why the lease was lost, if it was
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="erosion-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise Held if this lease was lost (another run took the folder over): the caller must not commit."""
        newest = _newest(self.out, self.options)
        if self.lost or newest is None or newest[0] != self.generation:
            taken = f": {newest[1].describe()}" if newest and newest[0] != self.generation else ""
            raise Held(f"{self.out}: this run's lease was lost{taken}; not committed. {self.lost}".strip())

    def release(self) -> None:
        """Stop renewing and mark the lease released, so that the next run need not wait for it to expire."""
        self._stop.set()
        self._thread.join()
        newest = _newest(self.out, self.options)
        if not self.lost and newest is not None and newest[0] == self.generation:
            self._write(dataclasses.replace(self.record, released=True))

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            newest = _newest(self.out, self.options)
            if newest is None or newest[0] != self.generation:
                self.lost = "Another run took it over after it expired."
                return
            self.record = dataclasses.replace(self.record, expires=_later(self.seconds))
            try:
                self._write(self.record)
            except OSError as error:  # storage unreachable: the run fails on its own; say why at commit
                self.lost = f"Renewing it failed: {error}"
                return

    def _write(self, record: Record) -> None:
        storage.write_atomic(_file(self.out, self.generation), _encode(record), self.options)


def acquire(out: str, run_id: str, holder: str, seconds: float = SECONDS, options=None) -> Lease:
    """Take the lease of ``out`` for ``holder``; Held if a live lease is another run's."""
    now = datetime.datetime.now(datetime.UTC)
    newest = _newest(out, options)
    if newest is not None and newest[1].alive(now):
        raise Held(f"{out} is in use by {newest[1].describe()}.")
    generation = newest[0] + 1 if newest else 0
    record = Record(holder, run_id, socket.gethostname(), os.getpid(), _stamp(now), _later(seconds, now))
    try:
        storage.create_exclusive(_file(out, generation), _encode(record), options)
    except FileExistsError:
        taken = _newest(out, options)
        raise Held(f"{out} was just taken by {taken[1].describe()}.") from None
    _prune(out, generation, options)
    return Lease(out, generation, record, seconds, options)


def _newest(out: str, options) -> tuple[int, Record] | None:
    fs, path = storage.filesystem(posixpath.join(out, FOLDER), options)
    if not fs.exists(path):
        return None
    generations = sorted(_generation(f) for f in fs.ls(path, detail=False) if f.endswith(".json"))
    if not generations:
        return None
    content = json.loads(storage.read_bytes(_file(out, generations[-1]), options))
    return generations[-1], Record(**content)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _prune(out: str, generation: int, options) -> None:
    fs, path = storage.filesystem(posixpath.join(out, FOLDER), options)
    for file in fs.ls(path, detail=False):
        if file.endswith(".json") and _generation(file) <= generation - KEEP:
            fs.rm(file)


def _file(out: str, generation: int) -> str:
    return posixpath.join(out, FOLDER, f"{generation:010d}.json")


def _generation(file: str) -> int:
    return int(posixpath.basename(file).removesuffix(".json"))


def _encode(record: Record) -> bytes:
    return json.dumps(record.__dict__, indent=2).encode()


def _stamp(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _later(seconds: float, now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return _stamp(now + datetime.timedelta(seconds=seconds))
