"""The registry reader (``datasets.read``): one Ray Data read task per run of a file's row groups, planned from the
footers."""

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from erosion.io import datasets, storage


def _table(start: int, rows: int) -> pa.Table:
    ids = list(range(start, start + rows))
    return pa.table({"joint_id": [f"j{i}" for i in ids], "image": [bytes([i % 251]) * 1_000 for i in ids]})


@pytest.fixture(params=["local", "s3"])
def table_url(request, tmp_path) -> str:
    """Two Parquet files of 300 rows, in row groups of 100, on local disk or the loopback S3 server."""
    url = str(tmp_path / "table") if request.param == "local" else request.getfixturevalue("s3_bucket") + "/table"
    fs, path = storage.filesystem(url)
    fs.makedirs(path, exist_ok=True)
    for n in range(2):
        with fs.open(f"{path}/part-{n}.parquet", "wb") as f:
            pq.write_table(_table(300 * n, 300), f, row_group_size=100)
    return url


def test_row_groups_are_read_in_runs_of_about_task_bytes_and_a_larger_one_alone():
    groups = [(100, 40), (100, 40), (100, 30), (50, 90), (100, 10), (100, 10)]
    assert datasets.runs(groups, 100) == [[0, 1], [2], [3, 4], [5]]
    assert datasets.runs(groups, 80) == [[0, 1], [2], [3], [4, 5]]
    assert datasets.runs(groups, 1) == [[i] for i in range(6)]  # each row group alone, the larger ones too
    assert datasets.runs(groups, 10**9) == [list(range(6))]
    assert datasets.runs([], 100) == []


def test_every_row_of_every_row_group_comes_out_once_in_order(ray_local, table_url):
    expected = pa.concat_tables([_table(0, 300), _table(300, 300)])
    for task_bytes, tasks in ((1, "6"), (datasets.TASK_BYTES, "2")):  # a task per row group; a task per file
        read = datasets.read(table_url, ["joint_id", "image"], task_bytes=task_bytes).materialize()
        assert re.search(r"ReadRowGroups: (\d+) tasks executed", read.stats())[1] == tasks
        rows = pa.concat_tables(ray.get(read.to_arrow_refs()))
        assert rows.num_rows == 600
        assert rows.sort_by("joint_id").equals(expected.sort_by("joint_id"))


def test_only_the_files_asked_for_are_read_and_each_row_names_its_file(ray_local, table_url):
    second = storage.parquet_files(table_url)[1]
    rows = pa.concat_tables(ray.get(datasets.read(table_url, ["joint_id", "path"], files=[second]).to_arrow_refs()))
    assert rows.column_names == ["joint_id", "path"]
    assert sorted(rows["joint_id"].to_pylist()) == sorted(f"j{i}" for i in range(300, 600))
    assert set(rows["path"].to_pylist()) == {second}


def test_row_groups_are_handed_on_in_blocks_of_about_block_bytes(ray_local, table_url):
    first = storage.parquet_files(table_url)[0]
    group = storage.footers(table_url, files=[first])[first].row_group(0)
    rows = datasets.read(table_url, ["joint_id", "image"], files=[first], block_bytes=group.total_byte_size // 4)
    blocks = rows.materialize()
    assert 11 <= blocks.num_blocks() <= 13  # 3 row groups of about 4 blocks' bytes each, in one read task
    assert blocks.count() == 300
