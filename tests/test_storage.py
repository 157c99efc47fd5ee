import datetime as dt

import pyarrow as pa
import pytest

from erosion.core import schema
from erosion.io import storage


def _registry_rows(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "joint_id": [f"1.2.{i}/mcp1" for i in range(start, start + n)],
            "patient_id": [f"p{i % 7}" for i in range(start, start + n)],
            "visit_date": [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(start, start + n)],
            "sop_iuid": [f"1.2.{i}" for i in range(start, start + n)],
            "body_part": ["hand_left"] * n,
            "joint": ["mcp1"] * n,
            "image": [bytes([i % 256]) * (1 + i % 50) for i in range(start, start + n)],
        },
        schema=schema.REGISTRY,
    )


def _round_trip(url: str) -> None:
    table = _registry_rows(2500)
    with storage.TableWriter(url, schema.REGISTRY, rows_per_file=1000, row_group_rows=300) as writer:
        for offset in range(0, 2500, 170):  # uneven appends across row groups and files
            writer.write(table.slice(offset, 170))
    assert [f.rsplit("/", 1)[1] for f in writer.files] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert storage.parquet_files(url) == writer.files
    assert storage.read_table(url).equals(table)
    streamed = pa.Table.from_batches([b for _, _, b in storage.iter_batches(url, batch_size=333)])
    assert streamed.equals(table)


def test_registry_round_trip_local(tmp_path):
    _round_trip(str(tmp_path / "registry"))


def test_registry_round_trip_s3(s3_bucket):
    _round_trip(f"{s3_bucket}/registry")


def test_local_and_s3_give_identical_tables(tmp_path, s3_bucket):
    table = _registry_rows(400)
    for url in (str(tmp_path / "r"), f"{s3_bucket}/r"):
        with storage.TableWriter(url, schema.REGISTRY) as writer:
            writer.write(table)
    assert storage.read_table(str(tmp_path / "r")).equals(storage.read_table(f"{s3_bucket}/r"))


def test_explicit_endpoint_option_reaches_the_server(s3_bucket, s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = storage.StorageOptions(endpoint_url=s3_server, region="us-east-1")
    with storage.TableWriter(f"{s3_bucket}/r", schema.REGISTRY, options=options) as writer:
        writer.write(_registry_rows(10))
    assert storage.read_table(f"{s3_bucket}/r", options=options).num_rows == 10


def test_a_failed_write_leaves_no_visible_file(tmp_path):
    url = str(tmp_path / "t")
    with (
        pytest.raises(RuntimeError),
        storage.TableWriter(url, schema.REGISTRY, rows_per_file=100, row_group_rows=10) as w,
    ):
        w.write(_registry_rows(150))  # one complete file, one half-written
        raise RuntimeError("killed")
    assert [f.rsplit("/", 1)[1] for f in storage.parquet_files(url)] == ["part-00000.parquet"]
    assert not list((tmp_path / "t").glob(".*staging"))


def test_writer_refuses_to_mix_with_an_existing_table(tmp_path):
    url = str(tmp_path / "t")
    with storage.TableWriter(url, schema.REGISTRY) as w:
        w.write(_registry_rows(3))
    with pytest.raises(FileExistsError, match="already holds Parquet files"):
        storage.TableWriter(url, schema.REGISTRY)


def test_an_empty_table_is_written_as_one_file_with_the_schema(tmp_path):
    url = str(tmp_path / "empty")
    storage.TableWriter(url, schema.RATINGS).close()
    assert storage.read_table(url).schema.names == schema.RATINGS.names


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet table"):
        storage.parquet_files(str(tmp_path / "nothing"))
