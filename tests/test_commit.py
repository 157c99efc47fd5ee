"""The commit protocol on local disk and on the loopback S3 server: leases, attempts, atomic commits, leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import attempts

from erosion.io import leases, runs, storage


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path) -> str:
    """An empty output folder, on local disk or in a fresh bucket of the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "out")
    return f"{request.getfixturevalue('s3_bucket')}/out"


def _commit(out: str, run_id: str, content: bytes) -> runs.RunManifest:
    """A run whose one output is a file holding ``content``."""
    with runs.begin(out, run_id) as attempt:
        storage.write_bytes(f"{attempt.url}/data.txt", content)
        committed = attempt.commit(
            runs.RunManifest(kind="score", run_id=run_id, outputs={"data": attempt.output("data.txt")})
        )
    assert committed == runs.manifest(attempt.run)  # what commit returns is what readers read
    return committed


def _data(out: str, run_id: str) -> bytes:
    return storage.read_bytes(runs.manifest(runs.run_url(out, run_id)).path("data"))


def test_a_second_run_is_refused_with_the_holder_and_since_when_and_writes_nothing(out):
    with runs.begin(out, "night") as first:
        with pytest.raises(
            leases.Held, match=rf"in use by run night \(attempt {first.name}, process \d+ on .*\) since"
        ):
            runs.begin(out, "other")
        assert attempts(runs.run_url(out, "other")) == []
        first.commit(runs.RunManifest(kind="score", run_id="night"))
    runs.begin(out, "other").abandon()  # released on commit: the next run needs no wait


def test_of_runs_racing_for_one_folder_exactly_one_gets_it(out):
    won, refused = [], []

    def race() -> None:
        try:
            won.append(runs.begin(out, "night"))
        except leases.Held as error:
            refused.append(str(error))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    won[0].abandon()


def test_a_rerun_keeps_the_committed_run_readable_until_it_commits(out):
    first = _commit(out, "night", b"first")
    with runs.begin(out, "night") as attempt:
        storage.write_bytes(f"{attempt.url}/data.txt", b"second")
        assert _data(out, "night") == b"first"  # the new attempt is written, the old run still the one read
        attempt.commit(runs.RunManifest(kind="score", run_id="night", outputs={"data": attempt.output("data.txt")}))
    second = runs.manifest(runs.run_url(out, "night"))
    assert _data(out, "night") == b"second" and second.replaced == first.attempt
    assert attempts(second.run) == sorted([first.attempt, second.attempt])  # the old one kept for its readers
    third = _commit(out, "night", b"third")
    runs.begin(out, "later").abandon()  # the next run removes what no manifest names any more
    assert attempts(third.run) == sorted([second.attempt, third.attempt])


def test_a_failed_attempt_commits_nothing_and_a_later_run_removes_what_it_wrote(out):
    first = _commit(out, "night", b"first")
    with pytest.raises(RuntimeError, match="mid-way"), runs.begin(out, "night") as attempt:
        storage.write_bytes(f"{attempt.url}/data.txt", b"half")
        raise RuntimeError("failed mid-way")
    assert _data(out, "night") == b"first" and len(attempts(first.run)) == 2
    with runs.begin(out, "next") as later:
        assert attempts(first.run) == [first.attempt]
        later.abandon()


KILLED = """
import os, signal, sys
from erosion.io import runs, storage
attempt = runs.begin(sys.argv[1], "night")
storage.write_bytes(f"{attempt.url}/data.txt", b"killed")
os.kill(os.getpid(), signal.SIGKILL)  # dies at the commit, before its manifest is written
"""


def test_a_run_killed_at_its_commit_leaves_the_night_as_it_was_and_does_not_block_the_next(out):
    first = _commit(out, "night", b"first")
    killed = subprocess.run([sys.executable, "-c", KILLED, out], check=False)
    assert killed.returncode == -9
    assert _data(out, "night") == b"first" and len(attempts(first.run)) == 2
    assert runs.manifest(first.run) == first  # the committed run untouched
    # the holder's process is gone (same host): its lease is dead at once, and its leftovers are removed
    _commit(out, "night", b"after")
    assert _data(out, "night") == b"after"
    assert first.attempt in attempts(first.run) and len(attempts(first.run)) == 2


def test_a_lease_of_a_holder_that_stopped_renewing_expires(out):
    record = leases.Record("_attempt-x", "night", "elsewhere", 1, "2026-12-03T01:00:00+00:00", _in(1.5))
    storage.create_exclusive(f"{out}/_lease/0000000000.json", json.dumps(record.__dict__).encode())
    with pytest.raises(leases.Held, match="process 1 on elsewhere"):
        runs.begin(out, "night")
    time.sleep(1.6)
    runs.begin(out, "night").abandon()


def test_a_live_holder_renews_its_lease_and_one_that_lost_it_cannot_commit(out):
    attempt = runs.begin(out, "night", lease_seconds=0.9)
    time.sleep(2.0)  # past the first expiry: renewed meanwhile
    with pytest.raises(leases.Held, match="in use by run night"):
        runs.begin(out, "other")
    record = leases.Record("_attempt-y", "other", "elsewhere", 1, "2026-12-03T01:00:00+00:00", _in(60))
    storage.create_exclusive(
        f"{out}/_lease/{attempt.lease.generation + 1:010d}.json", json.dumps(record.__dict__).encode()
    )
    with pytest.raises(leases.Held, match="lease was lost: run other"):
        attempt.commit(runs.RunManifest(kind="score", run_id="night"))
    attempt.abandon()
    with pytest.raises(FileNotFoundError):
        runs.manifest(attempt.run)


def _in(seconds: float) -> str:
    import datetime

    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)).isoformat()
