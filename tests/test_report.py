"""The agreement report: every row accounted for, statistics equal to independent implementations, a readable page."""

import html.parser
import os

import numpy as np
import pandas as pd
import pingouin
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from conftest import SMALL_MODEL
from sklearn import metrics

from erosion.cli.main import main
from erosion.core.domain import ALL_JOINTS
from erosion.io import runs, storage
from erosion.report import report, tables
from erosion.score import scoring

TABLES = ("accounting", "agreement", "confusion", "icc", "venn")
BROKEN = 3  # registry rows whose image is replaced by bytes that are no image


@pytest.fixture(scope="module")
def scored(ray_local, small_registry, untrained_model, tmp_path_factory) -> dict:
    """A real scoring run of the small synthetic registry, three of its crops broken, by a seeded untrained model."""
    folder = tmp_path_factory.mktemp("report")
    registry = storage.read_table(f"{small_registry}/registry")
    images = registry["image"].to_pylist()
    images[:BROKEN] = [b"not an image"] * BROKEN
    registry = registry.set_column(registry.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    os.makedirs(folder / "registry")
    half = registry.num_rows // 2
    pq.write_table(registry.slice(0, half), folder / "registry" / "part-0.parquet")
    pq.write_table(registry.slice(half), folder / "registry" / "part-1.parquet")
    model = untrained_model(folder / "model", SMALL_MODEL)
    run = scoring.score(scoring.ScoreConfig(str(folder / "registry"), model, str(folder / "runs"), run_id="night"))
    return {"run": run.run, "ratings": f"{small_registry}/ratings", "rows": registry.num_rows, "folder": folder}


@pytest.fixture(scope="module")
def made(scored) -> str:
    """The report of that run, made through the command line; returns the folder of its tables and page."""
    assert main(["report", "--scores", scored["run"], "--ratings", scored["ratings"]]) == 0
    return runs.manifest(f"{scored['run']}/report").path("tables")


def _stages(scored) -> tuple[pd.DataFrame, str]:
    """An independent join of the run's scores and the ratings: joint, then one column per rater."""
    scores = pq.read_table(runs.manifest(scored["run"]).path("scores")).to_pandas()
    model = tables.model_rater(scores["model_version"].iloc[0])
    scores = scores[scores["error"].isna()].set_index("joint_id")
    ratings = pq.read_table(scored["ratings"]).to_pandas()
    wide = ratings.pivot(index="joint_id", columns="rater", values="ratingen")
    return scores[["joint"]].assign(**{model: scores["ratingen_pred"]}).join(wide), model


@pytest.mark.slow
def test_every_file_is_written_and_every_input_row_is_accounted_for(scored, made):
    for name in TABLES:
        assert os.path.isfile(f"{made}/{name}.parquet"), name
    assert runs.manifest(f"{scored['run']}/report").kind == "report"
    pngs = sorted(os.listdir(f"{made}/figures"))
    assert len(pngs) == 7 and "venn.png" in pngs  # six pairs of four raters, and the Venn diagram
    for png in pngs:
        assert open(f"{made}/figures/{png}", "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    accounting = pd.read_parquet(f"{made}/accounting.parquet")
    by_source = accounting.groupby("source")["rows"].sum()
    ratings = pq.read_table(scored["ratings"]).to_pandas()
    assert by_source["scores"] == scored["rows"]
    for rater, rows in ratings.groupby("rater").size().items():
        assert by_source[f"ratings: {rater}"] == rows
    outcomes = accounting.set_index(["source", "outcome"])["rows"]
    assert outcomes[("scores", "left out, error: cannot decode image")] == BROKEN
    assert outcomes[("scores", "used")] == scored["rows"] - BROKEN


@pytest.mark.slow
def test_the_statistics_equal_scikit_learn_and_pingouin_on_an_independent_join(scored, made):
    stages, model = _stages(scored)
    pairs = pd.read_parquet(f"{made}/agreement.parquet")
    confusion = pd.read_parquet(f"{made}/confusion.parquet")
    humans = sorted(c for c in stages.columns if c not in (*tables.LABELS, model))
    checked = 0
    for subset, mask in ((ALL_JOINTS, stages["joint"].notna()), ("MCP", stages["joint"].str.startswith("mcp"))):
        for reference in humans:
            for rater in [h for h in humans if h > reference] + [model]:
                both = stages.loc[mask, [reference, rater]].dropna().astype(int)
                a, b = both[reference].to_numpy(), both[rater].to_numpy()
                row = pairs[(pairs["subset"] == subset) & (pairs["reference"] == reference) & (pairs["rater"] == rater)]
                assert len(row) == 1, (subset, reference, rater)
                row = row.iloc[0]
                assert row["n"] == len(a) > 0
                assert row["accuracy"] == pytest.approx(metrics.accuracy_score(a, b), abs=1e-9)
                assert row["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(a, b), abs=1e-9)
                kappa = metrics.cohen_kappa_score(a, b, labels=range(6), weights="quadratic")  # stage distances
                assert row["kappa"] == pytest.approx(kappa, abs=1e-9)
                pair = (confusion["reference"] == reference) & (confusion["rater"] == rater)
                cells = confusion[(confusion["subset"] == subset) & pair]
                counts = np.zeros((6, 6), int)
                counts[cells["reference_stage"], cells["rater_stage"]] = cells["count"]
                np.testing.assert_array_equal(counts, metrics.confusion_matrix(a, b, labels=range(6)))
                checked += 1
    assert checked == 12

    icc = pd.read_parquet(f"{made}/icc.parquet")
    common = stages[humans + [model]].dropna()
    long = common.reset_index().melt(id_vars="joint_id", var_name="rater", value_name="stage")
    oracle = pingouin.intraclass_corr(long, targets="joint_id", raters="rater", ratings="stage").set_index("Type")
    mine = icc[icc["subset"] == ALL_JOINTS].set_index("form")
    assert mine.loc["ICC2", "n"] == len(common) > 1
    names = {"ICC1": "ICC(1,1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)", "ICC1k": "ICC(1,k)", "ICC2k": "ICC(A,k)"}
    for form, name in (names | {"ICC3k": "ICC(C,k)"}).items():
        assert mine.loc[form, "value"] == pytest.approx(oracle.loc[name, "ICC"], abs=1e-9)
        bounds = np.round([mine.loc[form, "low"], mine.loc[form, "high"]], 2)
        assert list(bounds) == pytest.approx(list(oracle.loc[name, "CI95"]), abs=1e-9)  # pingouin rounds


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.open, self.captions, self.images, self.text = [], [], 0, []
        self._caption = False

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "img", "br"):
            self.open.append(tag)
        self.images += tag == "img" and dict(attrs)["src"].startswith("data:image/png;base64,")
        self._caption = tag == "caption"

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"
        self._caption = False

    def handle_data(self, data):
        self.text.append(data)
        if self._caption:
            self.captions.append(data)


@pytest.mark.slow
def test_the_page_names_every_table_and_embeds_every_plot(scored, made):
    page = _Page()
    page.feed(open(f"{made}/report.html", encoding="utf-8").read())
    page.close()
    assert page.open == []  # every element closed: the page is well formed
    text = " ".join(page.text)
    assert len(page.captions) == 5 and all(c.startswith(f"Table {i + 1}.") for i, c in enumerate(page.captions))
    for name in TABLES:
        assert f"{name}.parquet" in text, name
    assert page.images == len(os.listdir(f"{made}/figures"))
    assert runs.manifest(scored["run"]).model_version in text
    assert "night" in text and f"{scored['rows']:,}" in text


def test_join_stages_leaves_out_and_counts_every_unusable_row():
    scores = pd.DataFrame(
        {
            "joint_id": ["a", "b", "c", "d", "d", None],
            "patient_id": ["p1"] * 6,
            "joint": ["mcp1", "pip2", "mcp1", "pip3", "pip3", None],
            "ratingen_pred": [1, 2, None, 0, 0, None],
            "error": [None, None, "cannot decode image: truncated", None, None, "missing key: joint_id"],
        }
    )
    ratings = pd.DataFrame(
        {
            "joint_id": ["a", "b", "a", "a", "b", "c", "x", "b"],
            "rater": ["r1", "r1", "r2", "r2", "r2", "r1", "r1", "r3"],
            "ratingen": [0, 7, 3, 3, 1, 2, 1, None],
        }
    )
    stages, accounting = tables.join_stages(scores, ratings, "model")
    rows = {(r.source, r.outcome): r.rows for r in accounting.itertuples()}
    assert rows == {
        ("scores", "used"): 2,
        ("scores", "left out, error: cannot decode image"): 1,
        ("scores", "left out, error: missing key"): 1,
        ("scores", "left out, joint_id scored more than once"): 2,
        ("ratings: r1", "used"): 1,
        ("ratings: r1", "left out, no stage in 0-5"): 1,
        ("ratings: r1", "left out, joint not among the scored"): 2,
        ("ratings: r2", "left out, rated more than once"): 2,
        ("ratings: r2", "used"): 1,
        ("ratings: r3", "left out, no stage in 0-5"): 1,
    }
    assert sum(v for (s, _), v in rows.items() if s == "scores") == len(scores)
    assert sum(v for (s, _), v in rows.items() if s != "scores") == len(ratings)
    expected = pd.DataFrame(
        {"joint": ["mcp1", "pip2"], "model": [1.0, 2.0], "r1": [0.0, np.nan], "r2": [np.nan, 1.0]},
        index=pd.Index(["a", "b"], name="joint_id"),
    )
    pd.testing.assert_frame_equal(stages, expected, check_names=False)


def test_pairs_without_common_joints_or_with_one_class_get_a_note_not_a_crash():
    stages = pd.DataFrame(
        {
            "joint": ["mcp1", "mcp1", "pip1", "pip1"],
            "a": [0.0, 0.0, 0.0, 0.0],
            "b": [0.0, 0.0, np.nan, np.nan],
            "c": [np.nan, np.nan, 1.0, 2.0],
        }
    )
    pairs, confusion = tables.pair_tables(stages, ["a", "b", "c"])
    every = pairs[pairs["subset"] == ALL_JOINTS].set_index(["reference", "rater"])
    assert every.loc[("a", "b"), "n"] == 2 and every.loc[("a", "b"), "accuracy"] == 1.0
    assert np.isnan(every.loc[("a", "b"), "kappa"]) and "undefined" in every.loc[("a", "b"), "note"]
    assert every.loc[("b", "c"), "n"] == 0 and every.loc[("b", "c"), "note"] == "no joint rated by both"
    assert every.loc[("a", "c"), "accuracy"] == 0.0
    assert set(confusion.groupby(["subset", "reference", "rater"]).size()) == {36}
    icc = tables.icc_table(stages, ["a", "b", "c"])
    assert icc["value"].isna().all() and icc["note"].str.contains("n >= 2").all()


@pytest.mark.slow
def test_a_failed_report_leaves_nothing_that_looks_complete(scored):
    out = f"{scored['folder']}/reports/failed"
    config = report.ReportConfig(scored["run"], scored["ratings"], out=out, venn=("registry", "nobody", "x"))
    with pytest.raises(ValueError, match="Venn diagram takes three of the raters"):
        report.report(config)
    assert not os.path.exists(f"{out}/manifest.json")
    with pytest.raises(FileNotFoundError, match="not a committed run"):
        report.report(report.ReportConfig(f"{scored['folder']}/runs/missing", scored["ratings"], out=out))


@pytest.mark.slow
def test_the_report_reads_and_writes_s3(scored, made, s3_bucket):
    fs = s3fs.S3FileSystem(use_listings_cache=False)
    fs.put(scored["run"], f"{s3_bucket}/runs/night", recursive=True)
    fs.put(scored["ratings"], f"{s3_bucket}/ratings", recursive=True)
    config = report.ReportConfig(f"{s3_bucket}/runs/night", f"{s3_bucket}/ratings", out=f"{s3_bucket}/reports/night")
    result = report.report(config)
    assert runs.manifest(f"{s3_bucket}/reports/night").kind == "report"
    local = pd.read_parquet(f"{made}/agreement.parquet")
    remote = storage.read_table(f"{result.out}/agreement.parquet").to_pandas()
    pd.testing.assert_frame_equal(local, remote)
    assert fs.exists(f"{result.out}/report.html") and fs.exists(f"{result.out}/figures/venn.png")


ODD = {"registry": "dr $\\frac$", "rescorer_1": "dr.a", "rescorer_2": "dr-a"}  # plus odd joint ids below
ODD_IDS = ["a/../b", "c\\d", "<b>e</b>", "f g", "ärztin/名", "$x$"]


@pytest.mark.slow
def test_names_with_any_characters_render_as_written_and_never_share_a_plot_file(
    ray_local, small_registry, untrained_model, tmp_path
):
    registry = pq.read_table(f"{small_registry}/registry")
    renamed = {j: f"{ODD_IDS[i % len(ODD_IDS)]}#{i}" for i, j in enumerate(registry["joint_id"].to_pylist())}
    os.makedirs(tmp_path / "registry")
    os.makedirs(tmp_path / "ratings")
    ids = pa.array([renamed[j] for j in registry["joint_id"].to_pylist()])
    pq.write_table(registry.set_column(0, "joint_id", ids), tmp_path / "registry" / "part-0.parquet")
    ratings = pq.read_table(f"{small_registry}/ratings").to_pandas()
    ratings["joint_id"] = ratings["joint_id"].map(renamed)
    ratings["rater"] = ratings["rater"].map(ODD)
    pq.write_table(pa.Table.from_pandas(ratings, preserve_index=False), tmp_path / "ratings" / "part-0.parquet")
    model = untrained_model(tmp_path / "model", SMALL_MODEL)
    run = scoring.score(scoring.ScoreConfig(str(tmp_path / "registry"), model, str(tmp_path / "runs"), "odd")).run
    argv = ["report", "--scores", run, "--ratings", str(tmp_path / "ratings"), "--cam", "4"]
    assert main([*argv, "--registry", str(tmp_path / "registry")]) == 0
    folder = runs.manifest(f"{run}/report").path("tables")
    plots = os.listdir(f"{folder}/figures")
    assert len([p for p in plots if p.startswith("confusion_")]) == 6  # six pairs of four raters, six files
    assert len([p for p in plots if p.startswith("cam_")]) == 4
    page = _Page()
    page.feed(open(f"{folder}/report.html", encoding="utf-8").read())
    page.close()
    assert page.open == []
    text = " ".join(page.text)
    for name in ODD.values():
        assert name in text  # as written: no mathtext, no markup
    assert sum(joint in page.text for joint in renamed.values()) == 4  # the heat maps' joints, each as written
