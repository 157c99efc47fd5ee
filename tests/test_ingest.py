import io
import json

import numpy as np
import pytest
from PIL import Image

from erosion.io import storage
from erosion.registry import ingest, validate


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 30), value, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def wide_export(tmp_path):
    """Three radiographs of left hands, columns hand_left_1..3 only, with every kind of bad row."""
    images = tmp_path / "crops"
    images.mkdir()
    for sop in ("1.1", "1.2", "1.3", "1.4"):
        for joint in ("mcp1", "mcp2", "mcp3"):
            (images / f"{sop}_{joint}.jpg").write_bytes(_jpeg(100))
    (images / "1.2_mcp2.jpg").write_bytes(_jpeg(100)[:60])  # truncated
    (images / "1.2_mcp3.jpg").unlink()  # missing
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "patient_id,date_x,sop_iuid,body_part,hand_left_1,hand_left_2,hand_left_3,rau_score\n"
        "p1,2019-03-14,1.1,hand_left,0,12.5,100,9\n"
        "p1,2020-03-14,1.2,hand_left,5,7,8,9\n"
        "p2,14.03.2019,1.3,hand_left,0,0,0,0\n"
        "p3,2018-01-02,1.4,hand_left,0,130,,0\n"
    )
    columns = tmp_path / "columns.json"
    columns.write_text(
        json.dumps({"visit_date": "date_x", "joints": {f"hand_left_{i}": f"hand_left/mcp{i}" for i in (1, 2, 3)}})
    )
    return tmp_path


def test_wide_export_ingests_the_good_rows_and_reports_each_bad_one(wide_export):
    out = str(wide_export / "out")
    config = ingest.IngestConfig(
        labels=str(wide_export / "labels.csv"),
        images=str(wide_export / "crops"),
        out=out,
        columns=ingest.load_column_map(str(wide_export / "columns.json")),
    )
    manifest = ingest.ingest(config)
    errors = storage.read_table(f"{out}/ingest_errors").to_pylist()
    by_key = {e["key"]: (e["line"], e["column"], e["reason"]) for e in errors}
    assert by_key["1.2/mcp2"][:2] == (3, "image") and "unreadable image" in by_key["1.2/mcp2"][2]
    assert by_key["1.2/mcp3"][:2] == (3, "image") and "image file not found" in by_key["1.2/mcp3"][2]
    for joint in ("mcp1", "mcp2", "mcp3"):
        assert (
            by_key[f"1.3/{joint}"][:2] == (4, "visit_date")
            and "unparsable date '14.03.2019'" in by_key[f"1.3/{joint}"][2]
        )
    assert by_key["1.4/mcp2"] == (5, "hand_left_2", "label '130' is outside 0-100 %")
    assert len(errors) == 6

    registry = storage.read_table(f"{out}/registry")
    ratings = storage.read_table(f"{out}/ratings")
    # 1.1: three joints; 1.2: mcp1; 1.4: mcp1 labelled, mcp3 imaged but not labelled.
    assert sorted(registry["joint_id"].to_pylist()) == [
        "1.1/mcp1",
        "1.1/mcp2",
        "1.1/mcp3",
        "1.2/mcp1",
        "1.4/mcp1",
        "1.4/mcp3",
    ]
    got = {(r["joint_id"], r["erosion_pct"], r["ratingen"]) for r in ratings.to_pylist()}
    assert got == {
        ("1.1/mcp1", 0, 0),
        ("1.1/mcp2", 12.5, 1),
        ("1.1/mcp3", 100, 5),
        ("1.2/mcp1", 5, 1),
        ("1.4/mcp1", 0, 0),
    }
    assert manifest.rows == {"registry": 6, "ratings": 5, "errors": 6}
    report, ids = validate.validate_registry(f"{out}/registry")
    assert report.problems == [] and validate.validate_ratings(f"{out}/ratings", ids).problems == []


def test_long_export_with_two_raters_and_stage_labels(tmp_path):
    images = tmp_path / "crops"
    images.mkdir()
    for name in ("9.1_pip2", "9.1_wrist", "9.2_mtp1"):
        (images / f"{name}.png").write_bytes(_jpeg(50))  # the template says .png; PIL reads by content
    (tmp_path / "labels.csv").write_text(
        "patient_id,visit_date,sop_iuid,body_part,joint,score,rater\n"
        "p9,2021-06-01,9.1,hand_right,pip2,2,registry\n"
        "p9,2021-06-01,9.1,hand_right,pip2,3,expert\n"
        "p9,2021-06-01,9.1,hand_right,wrist,6,registry\n"
        "p9,2021-06-01,9.1,hand_right,dip2,1,registry\n"
        "p9,2021-06-01,9.2,foot_left,mtp1,0,\n"
        "p9,2021-06-01,9.1,hand_right,pip2,2,registry\n"
    )
    config = ingest.IngestConfig(
        labels=str(tmp_path / "labels.csv"),
        images=str(images),
        out=str(tmp_path / "out"),
        form="long",
        label_kind="stage",
        image_name="{sop_iuid}_{joint}.png",
        columns=ingest.ColumnMap(label="score"),
    )
    manifest = ingest.ingest(config)
    errors = {
        (e["line"], e["column"]): e["reason"]
        for e in storage.read_table(str(tmp_path / "out/ingest_errors")).to_pylist()
    }
    assert errors == {
        (4, "score"): "label '6' is not a Ratingen stage 0-5",
        (5, "joint"): errors[(5, "joint")],
        (7, "score"): "duplicate label of '9.1/pip2' by 'registry'",
    }
    assert "unknown joint 'dip2'" in errors[(5, "joint")]
    ratings = {
        (r["joint_id"], r["rater"], r["ratingen"])
        for r in storage.read_table(str(tmp_path / "out/ratings")).to_pylist()
    }
    assert ratings == {("9.1/pip2", "registry", 2), ("9.1/pip2", "expert", 3), ("9.2/mtp1", "registry", 0)}
    # pip2 once for its two raters, and mtp1; a rejected row (the wrist) brings no image either.
    assert manifest.rows["registry"] == 2


def test_a_csv_without_the_key_columns_is_refused(tmp_path):
    (tmp_path / "labels.csv").write_text("id,date\n1,2020-01-01\n")
    config = ingest.IngestConfig(labels=str(tmp_path / "labels.csv"), images=str(tmp_path), out=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"lacks the columns \['patient_id', 'visit_date', 'sop_iuid'\]"):
        ingest.ingest(config)


def test_unknown_keys_in_the_column_map_are_refused(tmp_path):
    (tmp_path / "c.json").write_text('{"patient": "pid"}')
    with pytest.raises(ValueError, match="unknown keys \\['patient'\\]"):
        ingest.load_column_map(str(tmp_path / "c.json"))


def _long_export(tmp_path, rows: str, image_name: str = "{sop_iuid}_{joint}.png") -> ingest.IngestConfig:
    (tmp_path / "crops").mkdir(exist_ok=True)
    (tmp_path / "crops" / "9.1_pip2.png").write_bytes(_jpeg(50))
    (tmp_path / "secret.png").write_bytes(_jpeg(50))  # outside the crops folder
    (tmp_path / "labels.csv").write_bytes(b"patient_id,visit_date,sop_iuid,body_part,joint,score\n" + rows.encode())
    return ingest.IngestConfig(
        labels=str(tmp_path / "labels.csv"),
        images=str(tmp_path / "crops"),
        out=str(tmp_path / "out"),
        form="long",
        label_kind="stage",
        image_name=image_name,
        columns=ingest.ColumnMap(label="score"),
    )


def test_an_image_path_that_would_read_outside_the_images_folder_is_a_row_error(tmp_path):
    rows = "p9,2021-06-01,9.1,hand_right,pip2,2\np9,2021-06-01,../secret,hand_right,pip3,2\n"
    rows += f"p9,2021-06-01,{tmp_path}/secret,hand_right,pip4,1\n"
    ingest.ingest(_long_export(tmp_path, rows))
    errors = {e["line"]: e["reason"] for e in storage.read_table(str(tmp_path / "out/ingest_errors")).to_pylist()}
    assert errors == {
        3: "image path '../secret_pip3.png' would read outside --images",
        4: f"image path '{tmp_path}/secret_pip4.png' would read outside --images",
    }
    assert storage.read_table(str(tmp_path / "out/registry"))["joint_id"].to_pylist() == ["9.1/pip2"]
    (tmp_path / "t").mkdir()
    ingest.ingest(_long_export(tmp_path / "t", "p9,2021-06-01,9.1,hand_right,pip2,2\n", "/{sop_iuid}_{joint}.png"))
    (error,) = storage.read_table(str(tmp_path / "t/out/ingest_errors")).to_pylist()
    assert error["reason"] == "image path '/9.1_pip2.png' would read outside --images"


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        (
            "p9,2021-06-01,9.1,hand_right,pip2,2\np9,2021-06-01,9.1,hand_right\n",
            r"line 3: 4 fields where the header has 6",
        ),
        ('p9,2021-06-01,9.1,hand_right,pip2,2\np9,"2021-06-01,9.1,hand_right,pip3,1\n', r"line 3: malformed CSV"),
        ("p9,2021-06-01,9.1,hand_right,pip2,2\np\xe9,2021-06-01,9.1,hand_right,pip3,1\n", r"line 3: not UTF-8"),
    ],
    ids=["ragged", "quoting", "not-utf8"],
)
def test_a_malformed_csv_is_refused_naming_the_line_and_nothing_is_published(tmp_path, rows, reason):
    config = _long_export(tmp_path, "")
    (tmp_path / "labels.csv").write_bytes(
        b"patient_id,visit_date,sop_iuid,body_part,joint,score\n" + rows.encode("latin-1")
    )
    with pytest.raises(ValueError, match=reason):
        ingest.ingest(config)
    assert not (tmp_path / "out").exists()
