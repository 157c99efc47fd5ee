"""Parquet tables on a local path or an ``s3://`` URL, through one code path (fsspec; s3fs for S3).

A table is a folder of Parquet files (or one file). Readers stream record batches file by file, so no
table is ever held whole; writers roll over to a new file every ``rows_per_file`` rows and publish each
file under its final name only when it is complete.

S3 settings come from the standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``) unless
:class:`StorageOptions` overrides them; nothing is hard-coded.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import botocore.exceptions
import fsspec
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from erosion.core.settings import setting


@dataclass(frozen=True)
class StorageOptions:
    """Overrides of the AWS environment for ``s3://`` URLs; None keeps what the environment says."""

    endpoint_url: str | None = setting(
        "an S3-compatible server, e.g. http://127.0.0.1:9000 (default: $AWS_ENDPOINT_URL or AWS)",
        None,
        flag="s3-endpoint",
    )
    region: str | None = setting("e.g. eu-central-1 (default: $AWS_REGION)", None, flag="s3-region")
    profile: str | None = setting("a profile of ~/.aws/credentials", None, flag="aws-profile")


ERRORS = (OSError, botocore.exceptions.BotoCoreError)  # what reading or writing a table can fail with


class StorageError(OSError):
    """A storage location that cannot be used (unreachable, credentials refused): the message names it and why."""


def reach(*urls: str, options: StorageOptions | None = None) -> None:
    """Fail before anything is written where an ``s3://`` URL's endpoint cannot be reached or refuses the
    credentials (StorageError naming the endpoint and the URL)."""
    options = options or StorageOptions()
    endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    for url in filter(_remote, urls):
        fs, path = filesystem(url, options)
        try:
            fs.exists(path)
        except PermissionError as error:
            raise StorageError(
                f"S3 at {endpoint} refused access to {url} ({error}): check the credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or --aws-profile) and the bucket's policy."
            ) from None
        except Exception as error:  # botocore's connection errors are not OSErrors
            raise StorageError(f"cannot reach S3 at {endpoint} for {url}: {error}") from None


def filesystem(url: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the path inside it for a local path or an ``s3://`` URL."""
    options = options or StorageOptions()
    kwargs = {}
    if url.startswith("s3://"):
        client = {k: v for k, v in (("endpoint_url", options.endpoint_url), ("region_name", options.region)) if v}
        kwargs = {"client_kwargs": client, "use_listings_cache": False}
        if options.profile:
            kwargs["profile"] = options.profile
    fs, path = fsspec.core.url_to_fs(url, **kwargs)
    return fs, path


def arrow_filesystem(url: str, options: StorageOptions | None = None) -> tuple[pyarrow.fs.FileSystem, str]:
    """The same filesystem wrapped for pyarrow and Ray Data (``filesystem=`` arguments)."""
    fs, path = filesystem(url, options)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def parquet_files(url: str, options: StorageOptions | None = None) -> list[str]:
    """The Parquet files of a table, sorted; hidden files (``.`` or ``_``) such as staging parts are skipped."""
    fs, path = filesystem(url, options)
    if not fs.exists(path):
        raise FileNotFoundError(f"no Parquet table at {url}")
    if fs.isfile(path):
        return [path]
    files = [
        f
        for f in fs.find(path)
        if f.endswith(".parquet") and not any(p.startswith((".", "_")) for p in f[len(path) :].split("/") if p)
    ]
    if not files:
        raise FileNotFoundError(f"no .parquet files under {url}")
    return sorted(files)


def read_schema(fs: fsspec.AbstractFileSystem, file: str) -> pa.Schema:
    """The Arrow schema stored in one Parquet file."""
    with fs.open(file, "rb") as f:
        return pq.read_schema(f)


def footers(
    url: str, options: StorageOptions | None = None, files: list[str] | None = None
) -> dict[str, pq.FileMetaData]:
    """The footer of each Parquet file of a table (of ``files`` only, if given: row count, row groups, schema):
    one small read per file, no data."""
    fs, _ = filesystem(url, options)
    metadata = {}
    for file in parquet_files(url, options) if files is None else files:
        with fs.open(file, "rb") as f:
            try:
                metadata[file] = pq.ParquetFile(f).metadata
            except pa.ArrowInvalid as error:
                raise ValueError(f"{file} is not a Parquet file ({error}).") from None
    return metadata


def common_columns(url: str, options: StorageOptions | None = None) -> set[str]:
    """The columns every Parquet file of a table has, by their Arrow names (a Parquet schema names a list
    column's leaf, such as ``probs.list.element``)."""
    return set.intersection(*(set(meta.schema.to_arrow_schema().names) for meta in footers(url, options).values()))


def row_counts(url: str, options: StorageOptions | None = None) -> dict[str, int]:
    """The number of rows of each Parquet file of a table, from the files' footers."""
    return {file: meta.num_rows for file, meta in footers(url, options).items()}


def snapshot(
    url: str, options: StorageOptions | None = None, metadata: dict[str, pq.FileMetaData] | None = None
) -> dict[str, dict]:
    """Each Parquet file of a table with its rows, bytes, version (S3 version id or ETag, else the local
    modification time) and a digest of its footer: what tells an unchanged file from a changed one."""
    fs, _ = filesystem(url, options)
    metadata = footers(url, options) if metadata is None else metadata
    found = {}
    for file, meta in metadata.items():
        info = fs.info(file)
        version = info.get("VersionId") or info.get("ETag") or info.get("mtime") or info.get("LastModified")
        footer = hashlib.blake2b(json.dumps(meta.to_dict(), sort_keys=True, default=str).encode(), digest_size=8)
        found[file] = {
            "rows": meta.num_rows,
            "bytes": int(info["size"]),
            "version": str(version).strip('"'),
            "footer": footer.hexdigest(),
        }
    return found


def iter_batches(
    url: str,
    columns: list[str] | None = None,
    batch_size: int = 4096,
    options: StorageOptions | None = None,
) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Stream a table as (file, first row index within the file, batch), reading only ``columns``."""
    fs, _ = filesystem(url, options)
    for file in parquet_files(url, options):
        for start, batch in iter_file_batches(fs, file, columns, batch_size):
            yield file, start, batch


def iter_file_batches(
    fs: fsspec.AbstractFileSystem, file: str, columns: list[str] | None = None, batch_size: int = 4096
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Stream one Parquet file as (first row index, batch)."""
    with fs.open(file, "rb") as f:
        start = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns):
            yield start, batch
            start += batch.num_rows


def read_table(url: str, columns: list[str] | None = None, options: StorageOptions | None = None) -> pa.Table:
    """A whole table in memory: for small tables (ratings of a subset, tests), never for the registry's images."""
    fs, _ = filesystem(url, options)
    tables = []
    for file in parquet_files(url, options):
        with fs.open(file, "rb") as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables, promote_options="default")


def write_bytes(url: str, content: bytes, options: StorageOptions | None = None) -> None:
    """Write a small file (a page, a plot) in one piece, its folder made as needed."""
    fs, path = filesystem(url, options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(content)


def write_json(url: str, content: dict, options: StorageOptions | None = None) -> None:
    """Write a small JSON document (a manifest, a summary) in one piece."""
    write_bytes(url, encode_json(content), options)


def encode_json(content: dict) -> bytes:
    """A JSON document as :func:`write_json` writes it."""
    return json.dumps(content, indent=2, default=str).encode()


def write_atomic(url: str, content: bytes, options: StorageOptions | None = None) -> None:
    """Replace a small file so that a reader sees the old content or the new, never a part: a rename on local
    disk (written and synced under a hidden name first), one PUT on S3."""
    fs, path = filesystem(url, options)
    if _remote(url):
        fs.pipe_file(path, content)
        return
    temporary = _local_temporary(path, content)
    os.replace(temporary, path)


def create_exclusive(url: str, content: bytes, options: StorageOptions | None = None) -> None:
    """Write a small file only where none exists yet, else FileExistsError: of any number of writers racing for
    one name exactly one succeeds (a hard link on local disk, ``If-None-Match: "*"`` on S3)."""
    fs, path = filesystem(url, options)
    if _remote(url):
        fs.pipe_file(path, content, mode="create")  # s3fs turns the server's 412 into FileExistsError
        return
    temporary = _local_temporary(path, content)
    try:
        os.link(temporary, path)
    finally:
        os.unlink(temporary)


def _remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _local_temporary(path: str, content: bytes) -> str:
    """``content`` written and synced to a hidden file beside ``path`` (its folder made as needed)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    return temporary


def write_table(url: str, table: pa.Table, options: StorageOptions | None = None) -> None:
    """Write a small table as one Parquet file (a report's table)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes(url, sink.getvalue().to_pybytes(), options)


def read_json(url: str, options: StorageOptions | None = None) -> dict:
    """Read a JSON document written by :func:`write_json`."""
    return json.loads(read_bytes(url, options))


def read_bytes(url: str, options: StorageOptions | None = None) -> bytes:
    """A small file's content; FileNotFoundError if there is none."""
    fs, path = filesystem(url, options)
    return fs.cat_file(path)


class TableWriter:
    """Writes a table as ``part-00000.parquet``, ``part-00001.parquet``, ... (``prefix``) under a folder, streaming.

    Each file is written under a hidden staging name and moved to its final name when complete, so a
    reader never sees a half-written file (on S3 an object appears only when its upload completes).
    The folder must not hold Parquet files already: a table is never mixed with an older one.
    """

    def __init__(
        self,
        url: str,
        schema: pa.Schema,
        rows_per_file: int = 10_000,
        options: StorageOptions | None = None,
        row_group_rows: int = 1024,
        prefix: str = "part",
    ) -> None:
        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}.")
        self.fs, self.path = filesystem(url, options)
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.prefix = prefix
        self.files: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._handle = None
        self._in_file = 0
        self.row_group_rows = row_group_rows
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        if self.fs.exists(self.path) and any(f.endswith(".parquet") for f in self.fs.find(self.path)):
            raise FileExistsError(f"{url} already holds Parquet files; remove them or write elsewhere.")
        self.fs.makedirs(self.path, exist_ok=True)

    def write(self, table: pa.Table) -> None:
        """Append rows (any number); buffered into row groups and split across files at ``rows_per_file``."""
        self._pending.append(table.select(self.schema.names).cast(self.schema))
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def close(self) -> list[str]:
        """Finish the last file and return the paths of all files written."""
        self._flush()
        if self._writer is None and not self.files:
            self._open()  # an empty table is still a table: one file with the schema and no rows
        if self._writer is not None:
            self._close_file()
        return self.files

    def _flush(self) -> None:
        table = pa.concat_tables(self._pending) if self._pending else self.schema.empty_table()
        self._pending, self._pending_rows = [], 0
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(self.rows_per_file - self._in_file, table.num_rows - offset)
            self._writer.write_table(table.slice(offset, take))
            self._in_file += take
            self.rows += take
            offset += take
            if self._in_file == self.rows_per_file:
                self._close_file()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.close()
            self._handle.close()
            self.fs.rm(self._staging_name())

    def _final_name(self) -> str:
        return posixpath.join(self.path, f"{self.prefix}-{len(self.files):05d}.parquet")

    def _staging_name(self) -> str:
        return posixpath.join(self.path, f".{self.prefix}-{len(self.files):05d}.parquet.staging")

    def _open(self) -> None:
        staging = self._staging_name()
        self._handle = self.fs.open(staging, "wb")
        self._writer = pq.ParquetWriter(self._handle, self.schema, compression="zstd")
        self._in_file = 0

    def _close_file(self) -> None:
        self._writer.close()
        self._handle.close()
        final = self._final_name()
        self.fs.mv(self._staging_name(), final)
        self.files.append(final)
        self._writer = None
