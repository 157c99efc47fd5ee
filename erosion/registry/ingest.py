"""Ingest of a real export: a CSV of labels plus a folder of crop images -> registry and ratings.

Two CSV shapes are read:

* long: one row per joint (and rater), with columns for the patient, the visit date, the radiograph,
  the body part, the joint and the label; a ``rater`` column is optional.
* wide: one row per radiograph with a column per joint (``hand_left_1`` .. ``hand_left_10``), as
  registries export them (the thesis's main data set).

Which CSV column means what is a :class:`ColumnMap`, read from a JSON file, never buried in code. Crops are found
by a file-name template (``{sop_iuid}_{joint}.jpg`` by default); a crop that is a DICOM file (by its content,
whatever its name) becomes a PNG of its displayed grey values (``erosion.registry.dicom``) with its provenance in
the registry's extra columns (``schema.PROVENANCE``). A row with a missing or unreadable image, an unparsable
date, an unknown joint or a label out of range goes to the error report with its CSV line and reason; everything
else is ingested.

A second CSV, of disease activity (``--activity``: patient, date, DAS28-ESR / DAS28-CRP as stored or their
components), becomes the ``activity`` table (``erosion.core.activity``), its rejected rows ``activity_errors``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import posixpath
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd
import pyarrow as pa

from erosion.core import activity, domain, schema
from erosion.core.settings import setting
from erosion.io import runs, storage
from erosion.registry import dicom
from erosion.registry.preprocess import letterbox


def default_wide_joints() -> dict[str, str]:
    """The default wide-form columns: ``<body_part>_1..5`` are MCP 1-5 and ``_6..10`` PIP 1-5, hands only."""
    columns = {}
    for hand in ("hand_left", "hand_right"):
        for i in range(1, 6):
            columns[f"{hand}_{i}"] = f"{hand}/mcp{i}"
            columns[f"{hand}_{i + 5}"] = f"{hand}/pip{i}"
    return columns


@dataclass(frozen=True)
class ColumnMap:
    """Which CSV column holds what. Load overrides from JSON with :func:`load_column_map`."""

    patient_id: str = "patient_id"
    visit_date: str = "visit_date"
    sop_iuid: str = "sop_iuid"
    body_part: str = "body_part"  # long form only
    joint: str = "joint"  # long form only
    label: str = "erosion_pct"  # long form only: the label column
    rater: str = "rater"  # long form only, optional: without it every label is the config's rater
    joints: dict[str, str] = field(default_factory=default_wide_joints)  # wide form: column -> "body_part/joint"


@dataclass(frozen=True)
class ActivityColumns:
    """Which column of the disease-activity CSV holds what; a component or score column may be absent."""

    patient_id: str = "patient_id"
    date: str = "date"  # of the assessment
    tender_28: str = "tender_28"  # tender joints of 28
    swollen_28: str = "swollen_28"  # swollen joints of 28
    esr: str = "esr"  # mm/h
    crp: str = "crp"  # mg/L
    global_health: str = "global_health"  # patient global, 0-100 mm
    das28_esr: str = "das28_esr"  # as stored; computed from the components where empty
    das28_crp: str = "das28_crp"


def load_column_map(path: str | None) -> ColumnMap:
    """A ColumnMap from a JSON object whose keys are ColumnMap fields; None gives the defaults."""
    return _load_columns(ColumnMap, path)


def load_activity_columns(path: str | None) -> ActivityColumns:
    """ActivityColumns from a JSON object whose keys are its fields; None gives the defaults."""
    return _load_columns(ActivityColumns, path)


def _load_columns(kind: type, path: str | None):
    """A column map of ``kind`` from a JSON object whose keys are its fields; any key left out keeps its default."""
    if path is None:
        return kind()
    with open(path) as f:
        content = json.load(f)
    unknown = set(content) - {f.name for f in fields(kind)}
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} in {path}; expected some of {[f.name for f in fields(kind)]}."
        )
    return kind(**content)


@dataclass(frozen=True)
class IngestConfig:
    """One ingest: where the export is, how to read it, where the registry goes."""

    labels: str = setting("the CSV file (local or s3://)")
    images: str = setting("the folder of crops (local or s3://)")
    out: str = setting("receives registry/, ratings/, ingest_errors/, manifest.json (and activity/, activity_errors/)")
    form: str = setting("wide (a row per radiograph) or long (a row per joint)", "wide", choices=("wide", "long"))
    label_kind: str = setting(
        "pct: labels are % eroded surface; stage: Ratingen stages 0-5", "pct", choices=("pct", "stage")
    )
    rater: str = setting("the rater of the labels, unless a long-form rater column says otherwise", "registry")
    image_name: str = setting("crop file under images/; fields: sop_iuid, body_part, joint", "{sop_iuid}_{joint}.jpg")
    date_format: str | None = setting("strptime format of the dates; None reads ISO 8601 (2019-03-14)", None)
    columns: ColumnMap = setting(
        "a JSON file mapping CSV columns (see README)", factory=ColumnMap, parse=load_column_map
    )
    rows_per_file: int = setting("joints per registry Parquet file", 5_000)
    chunk_rows: int = setting("CSV rows read at a time", 1_000)
    activity: str | None = setting(
        "a CSV of disease activity: patient, date, DAS28-ESR / -CRP or their components (see README)", None
    )
    activity_columns: ActivityColumns = setting(
        "a JSON file mapping the activity CSV's columns (see README)",
        factory=ActivityColumns,
        parse=load_activity_columns,
    )


@dataclass
class _Record:
    """One joint of the export on its way to the registry."""

    line: int  # CSV line (the header is line 1)
    patient_id: str
    visit_date: str
    sop_iuid: str
    body_part: str
    joint: str
    label: str
    rater: str
    column: str  # the CSV column the label came from

    @property
    def joint_id(self) -> str:
        return f"{self.sop_iuid}/{self.joint}"


ERRORS = pa.schema([("line", pa.int64()), ("key", pa.string()), ("column", pa.string()), ("reason", pa.string())])


def ingest(config: IngestConfig, options: storage.StorageOptions | None = None) -> runs.RunManifest:
    """Ingest the export; returns (and writes as manifest.json) the counts of ingested and rejected rows."""
    if config.form not in ("wide", "long") or config.label_kind not in ("pct", "stage"):
        raise ValueError(
            f"form must be wide or long and label_kind pct or stage, got {config.form}, {config.label_kind}."
        )
    for csv_file in (config.labels, config.activity):
        if csv_file:
            check_csv(csv_file, options)  # a malformed CSV is refused before anything is written
    out = config.out.rstrip("/")
    activity_rows = _ingest_activity(config, out, options) if config.activity else {}
    images_fs, images_path = storage.filesystem(config.images, options)
    registry = storage.TableWriter(f"{out}/registry", schema.INGESTED, config.rows_per_file, options)
    ratings = storage.TableWriter(f"{out}/ratings", schema.RATINGS, 10 * config.rows_per_file, options)
    errors = storage.TableWriter(f"{out}/ingest_errors", ERRORS, 10 * config.rows_per_file, options)
    seen_images: set[str] = set()
    seen_ratings: set[tuple[str, str]] = set()
    for chunk in _records(config, options):
        joints, labels, problems = [], [], []
        for record in chunk:
            try:
                visit_date = _parse_date(record.visit_date, config.date_format)
                problem = domain.joint_problem(record.body_part, record.joint)
                if problem:
                    raise _RowError("joint", problem)
                rating = _rating(record, config.label_kind)
                if (record.joint_id, record.rater) in seen_ratings:
                    raise _RowError(record.column, f"duplicate label of {record.joint_id!r} by {record.rater!r}")
                if record.joint_id not in seen_images:
                    image = _read_image(images_fs, posixpath.join(images_path, _image_name(config, record)), rating)
                    if image is None:
                        continue  # a joint that is neither labelled nor imaged is not in the export
                    keys = (record.joint_id, record.patient_id, visit_date, record.sop_iuid, record.body_part)
                    joints.append((*keys, record.joint, *image))
                    seen_images.add(record.joint_id)
                if rating is not None:
                    labels.append((record.joint_id, record.rater, *rating))
                    seen_ratings.add((record.joint_id, record.rater))
            except _RowError as error:
                problems.append((record.line, record.joint_id, error.column, error.reason))
        for writer, rows in ((registry, joints), (ratings, labels), (errors, problems)):
            if rows:
                writer.write(
                    pa.Table.from_pylist([dict(zip(writer.schema.names, r, strict=True)) for r in rows], writer.schema)
                )
    for writer in (registry, ratings, errors):
        writer.close()
    manifest = runs.RunManifest(
        kind="ingest",
        committed_at=runs.now(),
        rows={"registry": registry.rows, "ratings": ratings.rows, "errors": errors.rows} | activity_rows,
        config=asdict(config),
    )
    storage.write_json(f"{out}/{runs.MANIFEST}", manifest.to_json(), options)
    return manifest


class _RowError(Exception):
    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column, self.reason = column, reason


def _records(config: IngestConfig, options: storage.StorageOptions | None) -> Iterator[list[_Record]]:
    """The export as chunks of joint records, streaming the CSV."""
    fs, path = storage.filesystem(config.labels, options)
    cols = config.columns
    with fs.open(path, "r") as f:
        reader = pd.read_csv(f, dtype=str, keep_default_na=False, chunksize=config.chunk_rows)
        for number, frame in enumerate(reader):
            needed = [cols.patient_id, cols.visit_date, cols.sop_iuid]
            needed += [cols.body_part, cols.joint, cols.label] if config.form == "long" else []
            missing = [c for c in needed if c not in frame.columns]
            if missing:
                raise ValueError(f"{config.labels} lacks the columns {missing}; it has {list(frame.columns)}.")
            chunk = []
            for offset, row in enumerate(frame.to_dict("records")):
                line = number * config.chunk_rows + offset + 2
                keys = (row[cols.patient_id], row[cols.visit_date], row[cols.sop_iuid])
                if config.form == "long":
                    rater = row.get(cols.rater) or config.rater
                    chunk.append(
                        _Record(
                            line,
                            *keys,
                            row[cols.body_part],
                            row[cols.joint],
                            row[cols.label],
                            rater,
                            cols.label,
                        )
                    )
                else:
                    for column, target in cols.joints.items():
                        if column in row:
                            body_part, _, joint = target.partition("/")
                            chunk.append(_Record(line, *keys, body_part, joint, row[column], config.rater, column))
            yield chunk


def _parse_date(text: str, date_format: str | None, column: str = "visit_date") -> dt.date:
    try:
        return dt.datetime.strptime(text, date_format).date() if date_format else dt.date.fromisoformat(text)
    except ValueError:
        raise _RowError(
            column, f"unparsable date {text!r} (expected {date_format or 'ISO 8601, e.g. 2019-03-14'})"
        ) from None


def _ingest_activity(config: IngestConfig, out: str, options: storage.StorageOptions | None) -> dict[str, int]:
    """Write the activity CSV as ``activity/`` (``activity.SCHEMA``: scores as stored, else computed from the
    components) and its rejected rows as ``activity_errors/``; returns both row counts."""
    table = storage.TableWriter(f"{out}/activity", activity.SCHEMA, 10 * config.rows_per_file, options)
    errors = storage.TableWriter(f"{out}/activity_errors", ERRORS, 10 * config.rows_per_file, options)
    cols = config.activity_columns
    values = (*activity.COMPONENTS, *activity.SCORES)
    seen: dict[tuple[str, dt.date], int] = {}
    fs, path = storage.filesystem(config.activity, options)
    with fs.open(path, "r") as f:
        for number, frame in enumerate(pd.read_csv(f, dtype=str, keep_default_na=False, chunksize=config.chunk_rows)):
            missing = [c for c in (cols.patient_id, cols.date) if c not in frame.columns]
            if missing:
                raise ValueError(f"{config.activity} lacks the columns {missing}; it has {list(frame.columns)}.")
            rows, problems = [], []
            for offset, row in enumerate(frame.to_dict("records")):
                line = number * config.chunk_rows + offset + 2
                key = f"{row[cols.patient_id]}/{row[cols.date]}"
                try:
                    rows.append((line, key, *_assessment(row, cols, values, config.date_format, seen, line)))
                except _RowError as error:
                    problems.append((line, key, error.column, error.reason))
            scored = activity.complete(pd.DataFrame(rows, columns=["line", "key", "patient_id", "date", *values]))
            unscored = scored[list(activity.SCORES)].isna().all(axis=1)
            reason = "no DAS28: none stored, and the components lack tender_28, swollen_28 or both of esr and crp"
            problems += [(line, key, "das28", reason) for line, key in scored.loc[unscored, ["line", "key"]].values]
            table.write(activity.to_table(scored[~unscored]))
            if problems:
                rejected = [dict(zip(ERRORS.names, p, strict=True)) for p in sorted(problems)]
                errors.write(pa.Table.from_pylist(rejected, ERRORS))
    table.close()
    errors.close()
    return {"activity": table.rows, "activity_errors": errors.rows}


def _assessment(
    row: dict, cols: ActivityColumns, values: tuple[str, ...], date_format: str | None, seen: dict, line: int
) -> tuple:
    """(patient_id, date, *values as floats, NaN where empty) of one activity CSV row; a _RowError says why not."""
    patient_id = row[cols.patient_id].strip()
    if not patient_id:
        raise _RowError(cols.patient_id, "empty patient_id")
    date = _parse_date(row[cols.date], date_format, cols.date)
    if (patient_id, date) in seen:
        raise _RowError(cols.date, f"a second assessment of {patient_id} on {date} (line {seen[patient_id, date]})")
    parsed = []
    for name in values:
        column = getattr(cols, name)
        text = str(row.get(column, "")).strip()
        try:
            value = float(text) if text else np.nan
        except ValueError:
            raise _RowError(column, f"{name} {text!r} is not a number") from None
        problem = None if np.isnan(value) else activity.value_problem(name, value)
        if problem:
            raise _RowError(column, problem)
        parsed.append(value)
    seen[patient_id, date] = line
    return (patient_id, date, *parsed)


def _rating(record: _Record, label_kind: str) -> tuple[float | None, int] | None:
    """(erosion_pct, ratingen) of the label, None for an empty label."""
    text = record.label.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _RowError(record.column, f"label {text!r} is not a number") from None
    if label_kind == "stage":
        if value not in range(domain.NUM_STAGES):
            raise _RowError(record.column, f"label {text!r} is not a Ratingen stage 0-5")
        return None, int(value)
    if not 0 <= value <= 100:
        raise _RowError(record.column, f"label {text!r} is outside 0-100 %")
    return value, domain.ratingen_stage(value)


def check_csv(url: str, options: storage.StorageOptions | None = None) -> None:
    """ValueError naming the line where the CSV is not UTF-8, has broken quoting or a row whose number of fields
    is not the header's (blank lines aside)."""
    fs, path = storage.filesystem(url, options)
    line = 0

    def decoded(f) -> Iterator[str]:
        nonlocal line
        for line, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{url}, line {line}: not UTF-8 ({error}); nothing was ingested.") from None

    with fs.open(path, "rb") as f:
        rows = csv.reader(decoded(f), strict=True)
        try:
            header = next(rows, [])
            for row in rows:
                if row and len(row) != len(header):
                    fields = f"{len(row)} fields where the header has {len(header)}"
                    raise ValueError(f"{url}, line {line}: {fields}; nothing was ingested.")
        except csv.Error as error:
            raise ValueError(f"{url}, line {line}: malformed CSV ({error}); nothing was ingested.") from None


def _image_name(config: IngestConfig, record: _Record) -> str:
    """The crop's file name inside --images; a name that would lead outside it (absolute, ``..``) is a row error."""
    name = config.image_name.format(sop_iuid=record.sop_iuid, body_part=record.body_part, joint=record.joint)
    normal = posixpath.normpath(name.replace("\\", "/"))
    if posixpath.isabs(normal) or normal == ".." or normal.startswith("../") or "://" in name:
        raise _RowError("image", f"image path {name!r} would read outside --images")
    return name


def _read_image(fs, path: str, rating: tuple | None) -> tuple | None:
    """The crop's bytes (a DICOM file as PNG) and its provenance columns, after a full decode check; None when
    the joint has neither image nor label."""
    if not fs.exists(path):
        if rating is None:
            return None
        raise _RowError("image", f"image file not found: {path}")
    with fs.open(path, "rb") as f:
        data = f.read()
    provenance = (None,) * len(schema.PROVENANCE)
    try:
        if dicom.is_dicom(data):
            data, source = dicom.to_png(data)
            provenance = (source.photometric, source.pixel_spacing, source.bits_stored, source.transfer_syntax)
        letterbox(data)  # the same decode that training and scoring will do
    except ValueError as error:
        raise _RowError("image", f"unreadable image {path}: {error}") from None
    return data, *provenance
