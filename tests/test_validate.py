import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from erosion.core import schema
from erosion.registry import validate

NULLABLE = pa.schema([f.with_nullable(True) for f in schema.REGISTRY])  # as an export may write it


def _registry(tmp_path, rows, table_schema=NULLABLE, name="part-0.parquet"):
    folder = tmp_path / "registry"
    folder.mkdir(exist_ok=True)
    keys = ["joint_id", "patient_id", "visit_date", "sop_iuid", "body_part", "joint", "image"]
    table = pa.Table.from_pylist([dict(zip(keys, r, strict=True)) for r in rows], schema=table_schema)
    pq.write_table(table, folder / name)
    return str(folder)


def _row(joint_id, body_part="hand_left", joint="mcp1", image=b"\xff\xd8jpeg"):
    return (joint_id, "p1", dt.date(2020, 5, 1), joint_id.split("/")[0], body_part, joint, image)


def test_each_bad_registry_row_is_named_and_the_others_survive(tmp_path):
    rows = [
        _row("a/mcp1"),
        _row("b/dip2", joint="dip2"),
        _row("c/mcp1", body_part="knee"),
        _row("d/pip1", body_part="foot_left", joint="pip1"),
        _row("e/mcp1", image=b""),
        _row("f/mcp1", image=None),
        _row("a/mcp1"),
        _row("g/mcp1"),
    ]
    report, ids = validate.validate_registry(_registry(tmp_path, rows))
    found = {(p.row, p.key, p.column): p.reason for p in report.problems}
    assert found == {
        (1, "b/dip2", "joint"): found[(1, "b/dip2", "joint")],
        (2, "c/mcp1", "body_part"): found[(2, "c/mcp1", "body_part")],
        (3, "d/pip1", "joint"): "joint 'pip1' does not belong to body_part 'foot_left'",
        (4, "e/mcp1", "image"): "image is empty (0 bytes)",
        (5, "f/mcp1", "image"): "image is null",
        (6, "a/mcp1", "joint_id"): "duplicate joint_id 'a/mcp1'",
    }
    assert "unknown joint 'dip2'" in found[(1, "b/dip2", "joint")]
    assert "unknown body_part 'knee'" in found[(2, "c/mcp1", "body_part")]
    assert report.rows == 8 and report.bad_rows == 6
    assert {"a/mcp1", "g/mcp1"} <= ids


def test_a_duplicate_across_files_is_found(tmp_path):
    url = _registry(tmp_path, [_row("a/mcp1")], name="part-0.parquet")
    _registry(tmp_path, [_row("b/mcp1"), _row("a/mcp1")], name="part-1.parquet")
    report, _ = validate.validate_registry(url)
    [problem] = report.problems
    assert (problem.file.endswith("part-1.parquet"), problem.row, problem.reason) == (
        True,
        1,
        "duplicate joint_id 'a/mcp1'",
    )


def test_a_missing_column_and_a_wrong_type_are_named(tmp_path):
    wrong = pa.schema([f if f.name != "visit_date" else pa.field("visit_date", pa.string()) for f in NULLABLE])
    rows = [("a/mcp1", "p1", "2020-05-01", "a", "hand_left", "mcp1", b"x")]
    url = _registry(tmp_path, rows, table_schema=wrong)
    no_image = pa.table({"joint_id": ["b/mcp1"]})
    pq.write_table(no_image, tmp_path / "registry" / "part-1.parquet")
    report, _ = validate.validate_registry(url)
    reasons = sorted((p.file.rsplit("/", 1)[1], p.column, p.reason) for p in report.problems)
    assert (
        "part-0.parquet",
        "visit_date",
        "column 'visit_date' has type string, expected date32[day]",
    ) in reasons
    assert ("part-1.parquet", "image", "missing column 'image' (binary)") in reasons
    assert all(p.row is None for p in report.problems)


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    url = _registry(tmp_path, [_row("a/mcp1")])
    (tmp_path / "registry" / "part-1.parquet").write_bytes(b"PAR1 truncated")
    report, _ = validate.validate_registry(url)
    [problem] = report.problems
    assert problem.file.endswith("part-1.parquet") and "not a readable Parquet file" in problem.reason
    assert report.rows == 1


def test_bad_ratings_are_named(tmp_path):
    folder = tmp_path / "ratings"
    folder.mkdir()
    rows = [
        ("a/mcp1", "registry", 10.0, 1),
        ("a/mcp1", "rescorer_1", 120.0, 5),
        ("a/mcp1", "rescorer_2", None, 7),
        ("b/mcp1", "registry", 50.0, 1),
        ("a/mcp1", "registry", 10.0, 1),
        ("zzz/mcp1", "registry", None, 0),
        ("b/mcp1", "rescorer_1", -1.0, None),
    ]
    table = pa.Table.from_pylist(
        [dict(zip(schema.RATINGS.names, r, strict=True)) for r in rows],
        schema=pa.schema([f.with_nullable(True) for f in schema.RATINGS]),
    )
    pq.write_table(table, folder / "part-0.parquet")
    report = validate.validate_ratings(str(folder), registry_ids={"a/mcp1", "b/mcp1"})
    found = {(p.row, p.column): p.reason for p in report.problems}
    assert found == {
        (1, "erosion_pct"): "erosion_pct 120.0 is outside [0, 100]",
        (2, "ratingen"): "ratingen 7 is outside 0..5",
        (3, "ratingen"): "ratingen 1 contradicts erosion_pct 50.0 (stage 3)",
        (4, "rater"): "duplicate rating of 'a/mcp1' by 'registry'",
        (5, "joint_id"): "joint_id 'zzz/mcp1' is not in the registry",
        (6, "erosion_pct"): "erosion_pct -1.0 is outside [0, 100]",
        (6, "ratingen"): "ratingen is null",
    }
    assert report.problems[0].key == "a/mcp1 by rescorer_1"
    assert report.rows == 7 and report.bad_rows == 6


def test_the_synthetic_registry_is_valid(small_registry):
    report, ids = validate.validate_registry(f"{small_registry}/registry")
    assert report.problems == [] and report.rows == len(ids) > 0
    assert validate.validate_ratings(f"{small_registry}/ratings", ids).problems == []
