"""Rau scores per visit, against values computed by hand."""

import datetime

import pyarrow as pa
import pytest

from erosion.core import rau

D1, D2 = datetime.date(2020, 1, 1), datetime.date(2021, 6, 30)


def _scores(rows: list[tuple]) -> pa.Table:
    """(patient, date, joint, predicted stage, expected stage, error) -> a table of the score columns."""
    names = ["patient_id", "visit_date", "joint", "ratingen_pred", "ratingen_expected", "error"]
    columns = dict(zip(names, zip(*rows, strict=True), strict=True))
    return pa.table(
        {
            "patient_id": pa.array(columns["patient_id"], pa.string()),
            "visit_date": pa.array(columns["visit_date"], pa.date32()),
            "body_part": pa.array(["hand_left"] * len(rows), pa.string()),
            "joint": pa.array(columns["joint"], pa.string()),
            "ratingen_pred": pa.array(columns["ratingen_pred"], pa.int8()),
            "ratingen_expected": pa.array(columns["ratingen_expected"], pa.float32()),
            "error": pa.array(columns["error"], pa.string()),
        }
    )


def test_rau_per_visit_by_hand():
    # Visit (a, D1): stages 2, 0, 3 scored, one failed -> sum 5 over 3 joints -> 5 * 38 / 3 = 63.333...
    # Visit (a, D2): stage 1 -> 38.0. Visit (b, D1): only a failed joint -> no Rau score (null), not 0.
    # The rows come in two batches that split visit (a, D1), as a streaming run delivers them.
    first = _scores(
        [
            ("a", D1, "mcp2", 2, 2.25, None),
            ("a", D1, "pip3", 0, 0.5, None),
            ("b", D1, "mcp1", None, None, "empty image: 0 bytes"),
        ]
    )
    second = _scores(
        [
            ("a", D1, "mcp1", 3, 2.75, None),
            ("a", D1, "pip1", None, None, "cannot decode image: not a JPEG or PNG (3 bytes)"),
            ("a", D2, "pip2", 1, 1.5, None),
        ]
    )
    table = rau.combine([rau.partial(first), rau.partial(second)], run_id="r1")
    assert table.schema == rau.SCHEMA
    rows = table.to_pylist()
    assert [(r["patient_id"], r["visit_date"]) for r in rows] == [("a", D1), ("a", D2), ("b", D1)]
    a1, a2, b1 = rows
    assert (a1["joints_scored"], a1["joints_failed"], a1["stage_sum"]) == (3, 1, 5)
    assert a1["rau"] == pytest.approx(5 * 38 / 3) and a1["rau_expected"] == pytest.approx(5.5 * 38 / 3)
    assert a1["joints"] == ["hand_left/mcp1", "hand_left/mcp2", "hand_left/pip3"]
    assert (a2["joints_scored"], a2["stage_sum"], a2["rau"], a2["joints"]) == (1, 1, 38.0, ["hand_left/pip2"])
    assert (b1["joints_scored"], b1["joints_failed"], b1["rau"], b1["rau_expected"], b1["joints"]) == (
        0,
        1,
        None,
        None,
        [],
    )
    assert {r["run_id"] for r in rows} == {"r1"}


def test_a_full_hand_of_stage_5_is_the_maximum():
    rows = [("p", D1, f"{kind}{i}", 5, 5.0, None) for kind in ("mcp", "pip") for i in range(1, 6)]
    (visit,) = rau.combine([rau.partial(_scores(rows))], run_id="r").to_pylist()
    assert visit["joints_scored"] == 10 and visit["stage_sum"] == 50 and visit["rau"] == pytest.approx(190.0)


def test_no_scores_give_an_empty_table():
    assert rau.combine([], run_id="r").num_rows == 0
