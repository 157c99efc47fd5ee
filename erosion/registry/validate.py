"""Validation of a registry and its ratings against the data contracts, row by row, streaming.

Every problem names the table, the file, the row within the file, the row's key and the reason, so a
data team can find and mend it; the rows without a problem are still good to use. Whole-file problems
(a missing column, a column of the wrong type, a file that is not Parquet) carry no row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from erosion.core import domain, schema
from erosion.core.settings import setting
from erosion.io import storage

_VALID_PAIRS = pa.array([f"{b}/{j}" for b in domain.BODY_PARTS for j in domain.joints_of(b)])


PROBLEMS = pa.schema(
    [(c, pa.int64() if c == "row" else pa.string()) for c in ("table", "file", "row", "key", "column", "reason")]
)
"""The schema of a validation report written as Parquet."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, and where."""

    table: str  # "registry" or "ratings"
    file: str  # the Parquet file
    row: int | None  # row index within the file; None for a whole-file problem
    key: str | None  # joint_id (ratings: "joint_id by rater"); None when unknown
    column: str  # the column at fault
    reason: str  # what is wrong, in words


@dataclass
class Report:
    """What a validation pass saw: rows read and problems found."""

    rows: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def bad_rows(self) -> int:
        """Rows with at least one problem."""
        return len({(p.file, p.row) for p in self.problems if p.row is not None})

    def to_table(self) -> pa.Table:
        """The problems as an Arrow table, one row each, for a Parquet error report."""
        return pa.table({c: [getattr(p, c) for p in self.problems] for c in PROBLEMS.names}, schema=PROBLEMS)


def registry_row_problems(batch: pa.RecordBatch | pa.Table) -> Iterator[tuple[int, str, str]]:
    """(row, column, reason) for each row-level problem of registry rows (duplicates aside).

    Finds null keys, an unknown body part or joint (or a joint of another body part), a null or empty image.
    """
    for column in ("joint_id", "patient_id", "visit_date", "sop_iuid"):
        for i in _indices(pc.is_null(batch[column])):
            yield i, column, f"{column} is null"
    pairs = pc.binary_join_element_wise(batch["body_part"], batch["joint"], "/")
    for i in _indices(pc.invert(pc.fill_null(pc.is_in(pairs, value_set=_VALID_PAIRS), False))):
        body_part, joint = batch["body_part"][i].as_py(), batch["joint"][i].as_py()
        column = "body_part" if body_part not in domain.BODY_PARTS else "joint"
        yield i, column, domain.joint_problem(body_part, joint)
    empty = pc.fill_null(pc.equal(pc.binary_length(batch["image"]), 0), True)
    for i in _indices(empty):
        yield i, "image", "image is empty (0 bytes)" if batch["image"][i].is_valid else "image is null"


def ratings_row_problems(batch: pa.RecordBatch | pa.Table) -> Iterator[tuple[int, str, str]]:
    """(row, column, reason) for each row-level problem of rating rows (duplicates aside).

    Finds null keys, a % outside [0, 100], a stage outside 0..5, and a stage that contradicts the %.
    """
    for column in ("joint_id", "rater"):
        for i in _indices(pc.is_null(batch[column])):
            yield i, column, f"{column} is null"
    pct, stage = batch["erosion_pct"], batch["ratingen"]
    pct_bad = pc.fill_null(pc.invert(pc.and_(pc.greater_equal(pct, 0), pc.less_equal(pct, 100))), False)
    for i in _indices(pct_bad):
        yield i, "erosion_pct", f"erosion_pct {pct[i].as_py()} is outside [0, 100]"
    stage_bad = pc.fill_null(pc.invert(pc.and_(pc.greater_equal(stage, 0), pc.less(stage, domain.NUM_STAGES))), True)
    for i in _indices(stage_bad):
        value = stage[i].as_py()
        yield i, "ratingen", "ratingen is null" if value is None else f"ratingen {value} is outside 0..5"
    both_ok = pc.invert(pc.or_(pc.or_(pct_bad, stage_bad), pc.is_null(pct)))
    for i in _indices(both_ok):
        expected = domain.ratingen_stage(pct[i].as_py())
        if expected != stage[i].as_py():
            yield (
                i,
                "ratingen",
                f"ratingen {stage[i].as_py()} contradicts erosion_pct {pct[i].as_py()} (stage {expected})",
            )


@dataclass(frozen=True)
class ValidateConfig:
    """What to check, and where the problems go."""

    registry: str = setting("the registry table (local folder or s3:// URL)")
    ratings: str = setting("the ratings table, checked too (default: none)", "")
    report: str = setting("write the problems here as Parquet (default: nowhere)", "")
    options: storage.StorageOptions = setting("S3 settings", factory=storage.StorageOptions)


def validate(config: ValidateConfig) -> list[Report]:
    """The registry's report, then the ratings' (their joints checked against the registry); written as Parquet
    to ``config.report`` when it is given."""
    registry, ids = validate_registry(config.registry, config.options)
    reports = [registry] + ([validate_ratings(config.ratings, ids, config.options)] if config.ratings else [])
    if config.report:
        with storage.TableWriter(config.report, PROBLEMS, options=config.options) as writer:
            for report in reports:
                writer.write(report.to_table())
    return reports


def validate_registry(url: str, options: storage.StorageOptions | None = None) -> tuple[Report, set[str]]:
    """Validate a registry table; returns the report and the set of its joint_ids (for the ratings check)."""
    report, seen = Report(), set()
    for file, start, batch in _batches(url, "registry", schema.REGISTRY, report, options):
        problems = list(registry_row_problems(batch))
        ids = batch["joint_id"].to_pylist()
        for i, joint_id in enumerate(ids):
            if joint_id is not None:
                if joint_id in seen:
                    problems.append((i, "joint_id", f"duplicate joint_id {joint_id!r}"))
                seen.add(joint_id)
        report.problems += [Problem("registry", file, start + i, ids[i], c, r) for i, c, r in sorted(problems)]
    return report, seen


def validate_ratings(
    url: str, registry_ids: set[str] | None = None, options: storage.StorageOptions | None = None
) -> Report:
    """Validate a ratings table, and, given the registry's joint_ids, that each rating's joint exists."""
    report, seen = Report(), set()
    for file, start, batch in _batches(url, "ratings", schema.RATINGS, report, options):
        problems = list(ratings_row_problems(batch))
        ids, raters = batch["joint_id"].to_pylist(), batch["rater"].to_pylist()
        for i, (joint_id, rater) in enumerate(zip(ids, raters, strict=True)):
            if (joint_id, rater) in seen:
                problems.append((i, "rater", f"duplicate rating of {joint_id!r} by {rater!r}"))
            seen.add((joint_id, rater))
            if registry_ids is not None and joint_id is not None and joint_id not in registry_ids:
                problems.append((i, "joint_id", f"joint_id {joint_id!r} is not in the registry"))
        report.problems += [
            Problem("ratings", file, start + i, f"{ids[i]} by {raters[i]}", c, r) for i, c, r in sorted(problems)
        ]
    return report


def _batches(
    url: str, table: str, expected: pa.Schema, report: Report, options: storage.StorageOptions | None
) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Batches of the files whose schema is usable; files that are not are reported whole and skipped."""
    fs, _ = storage.filesystem(url, options)
    for file in storage.parquet_files(url, options):
        try:
            found = storage.read_schema(fs, file)
        except (pa.ArrowInvalid, OSError) as error:
            report.problems.append(Problem(table, file, None, None, "*", f"not a readable Parquet file: {error}"))
            continue
        wrong = schema.schema_problems(found, expected)
        report.problems += [Problem(table, file, None, None, c, r) for c, r in wrong]
        if wrong:
            continue
        for start, batch in storage.iter_file_batches(fs, file, expected.names):
            report.rows += batch.num_rows
            yield file, start, schema.normalize_text(batch, expected)


def _indices(mask: pa.Array | pa.ChunkedArray) -> list[int]:
    return pc.indices_nonzero(mask).to_pylist()
