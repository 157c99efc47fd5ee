"""Rau scores per visit from a scoring run's per-joint scores, on Arrow tables, streaming.

A visit is (patient_id, visit_date). Its Rau score sums the predicted stages of the joints scored at that visit
and extrapolates to 38 joints (``domain.rau_from_sum``); rows that failed (with an ``error``) are left out of the
sum and counted. ``rau_expected`` does the same with the expected stages (sum of k * p_k), a continuous score
that does not jump when a probability crosses a class boundary. Scores arrive in batches in any order, so each
batch is reduced to one partial row per visit (``partial``) and the partials are combined at the end
(``combine``): memory grows with the number of visits, not of joints.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from erosion.core.domain import rau_from_sum

VISIT = ["patient_id", "visit_date"]
COLUMNS = [*VISIT, "body_part", "joint", "ratingen_pred", "ratingen_expected", "error"]
"""The score columns a Rau score needs."""

SCHEMA = pa.schema(
    [
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("visit_date", pa.date32(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("joints_scored", pa.int32(), nullable=False),  # joints with a score at this visit
        pa.field("joints_failed", pa.int32(), nullable=False),  # joints whose crop could not be scored
        pa.field("stage_sum", pa.int32(), nullable=False),  # sum of the predicted stages of the scored joints
        pa.field("rau", pa.float32()),  # stage_sum * 38 / joints_scored; null when no joint was scored
        pa.field("rau_expected", pa.float32()),  # the same from the expected stages
        pa.field("joints", pa.list_(pa.string()), nullable=False),  # the scored joints, "body_part/joint", sorted
    ]
)
"""The Rau contract: one row per (patient, visit, run)."""

_SUMS = ["joints_scored", "joints_failed", "stage_sum", "expected_sum"]


def partial(scores: pa.Table) -> pa.Table:
    """One row per visit in a batch of scores: joints scored and failed, sums of stages, the scored joints.

    A row without a patient or a date belongs to no visit; it is counted as failed in the run, not here.
    """
    scores = scores.filter(pc.and_(pc.is_valid(scores["patient_id"]), pc.is_valid(scores["visit_date"])))
    scored = pc.is_null(scores["error"])
    joint = pc.binary_join_element_wise(scores["body_part"], scores["joint"], "/")
    table = pa.table(
        {
            "patient_id": scores["patient_id"],
            "visit_date": scores["visit_date"],
            "joints_scored": pc.cast(scored, pa.int64()),
            "joints_failed": pc.cast(pc.invert(scored), pa.int64()),
            "stage_sum": pc.if_else(scored, pc.cast(scores["ratingen_pred"], pa.int64()), 0),
            "expected_sum": pc.if_else(scored, pc.cast(scores["ratingen_expected"], pa.float64()), 0.0),
            "joints": pc.if_else(scored, joint, pa.scalar(None, pa.string())),
        }
    )
    return _group(table)


def combine(partials: list[pa.Table], run_id: str) -> pa.Table:
    """The run's Rau table from the partials of all its batches, sorted by patient and visit."""
    visits: dict[tuple, list] = {}
    for table in partials:
        for row in table.to_pylist():
            total = visits.setdefault((row["patient_id"], row["visit_date"]), [0, 0, 0, 0.0, []])
            for i, name in enumerate(_SUMS):
                total[i] += row[name]
            total[4] += [j for j in row["joints"] if j is not None]
    keys = sorted(visits)
    totals = [visits[k] for k in keys]
    columns = {
        "patient_id": [k[0] for k in keys],
        "visit_date": [k[1] for k in keys],
        "run_id": [run_id] * len(keys),
        "joints_scored": [t[0] for t in totals],
        "joints_failed": [t[1] for t in totals],
        "stage_sum": [t[2] for t in totals],
        "rau": [rau_from_sum(t[2], t[0]) for t in totals],
        "rau_expected": [rau_from_sum(t[3], t[0]) for t in totals],
        "joints": [sorted(t[4]) for t in totals],
    }
    return pa.table(columns, schema=SCHEMA)


def _group(table: pa.Table) -> pa.Table:
    """Sum the counts and collect the joints per visit."""
    aggregations = [(name, "sum") for name in _SUMS] + [("joints", "list")]
    grouped = table.group_by(VISIT, use_threads=False).aggregate(aggregations)
    return grouped.rename_columns([c.removesuffix("_sum").removesuffix("_list") for c in grouped.column_names])
