"""The suite's random S3 secret is in no file that the suite, its runs or Ray wrote: run last (see conftest)."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import S3_SECRET


@pytest.mark.last
def test_no_file_the_suite_or_ray_wrote_holds_the_s3_secret(tmp_path_factory):
    secret = S3_SECRET.encode()
    folders = [str(tmp_path_factory.getbasetemp()), "/tmp/ray/session_latest"]
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in tracked if os.path.isfile(f)]
    for folder in folders:
        for root, _, names in os.walk(os.path.realpath(folder)):
            files += [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n))]
    assert len(files) > len(tracked)  # the runs' manifests, model cards, reports and Ray's logs among them
    holding = []
    for file in files:
        try:
            with open(file, "rb") as f:
                if secret in f.read():
                    holding.append(file)
        except OSError:  # a socket or a file gone meanwhile
            continue
    assert holding == []
