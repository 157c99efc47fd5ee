"""Disease activity beside erosion: DAS28 against published and hand-worked values, the join to visits by hand, the
clustered bootstrap against scipy, ingest and synth of the activity table, and the report's section."""

import datetime
import hashlib
import json
import math
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_MODEL
from scipy import stats

from erosion.cli.main import main
from erosion.core import activity, domain, rau
from erosion.io import runs, storage
from erosion.registry import ingest, synth
from erosion.report import report

D = datetime.date


def _das28(tender, swollen, marker, global_health=math.nan, kind="esr") -> float:
    formula = activity.das28_esr if kind == "esr" else activity.das28_crp
    return float(formula(*(np.array([float(v)]) for v in (tender, swollen, marker, global_health)))[0])


def test_das28_crp_at_no_activity_is_the_published_minimum_0_96_and_1_15():
    # medicalalgorithms.com, "DAS28-CRP calculator": "minimum score: 0.96 for the 4 variable version and 1.15 for
    # the 3 variable version" (no tender or swollen joint, CRP 0, GH 0).
    assert _das28(0, 0, 0, 0, "crp") == pytest.approx(0.96, abs=1e-12)
    assert _das28(0, 0, 0, kind="crp") == pytest.approx(1.15, abs=1e-12)


def test_das28_esr_at_no_activity_is_the_formulas_constant():
    # das-score.nl, "alternative validated formulae": DAS28(4) has no constant, DAS28(3) adds 0.16; ln(ESR 1) = 0.
    assert _das28(0, 0, 1, 0) == pytest.approx(0.0, abs=1e-12)
    assert _das28(0, 0, 1) == pytest.approx(0.16, abs=1e-12)


def test_published_worked_examples():
    # EULAR 2013 abstract AB0190 (scientific.sparx-ip.net/archiveeular, item 2013AB0190): "A patient with five
    # tender joints, one swollen joint, VAS 10 and CRP 1mg/l, DAS28 score is 2,9; if the CRP instead is tested to
    # 7 mg/l ... DAS28 is calculated to 3,4." (DAS28-CRP, 4 variables; one decimal as printed).
    assert round(_das28(5, 1, 1, 10, "crp"), 1) == 2.9
    assert round(_das28(5, 1, 7, 10, "crp"), 1) == 3.4
    # The official DAS calculator (www.4s-dawn.com/DAS28, linked from das-score.nl), as quoted in the test suite of
    # RheumaComposites.jl (test/types/das28.jl): TJC 4, SJC 5, patient global 12 mm, ESR 44 mm/h -> DAS28-ESR 4.56;
    # CRP 44 mg/L -> DAS28-CRP 4.24.
    assert round(_das28(4, 5, 44, 12), 2) == 4.56
    assert round(_das28(4, 5, 44, 12, "crp"), 2) == 4.24


def test_the_four_formulas_by_hand():
    # das-score.nl's formulae, worked by hand at TJC 4, SJC 9, ESR 25 mm/h or CRP 24 mg/L, GH 36 mm:
    # 0.56 * 2 = 1.12; 0.28 * 3 = 0.84; ln 25 = 3.2188758; 0.014 * 36 = 0.504.
    esr, crp = 0.70 * 3.2188758, 0.36 * 3.2188758  # 2.2532131, 1.1587953
    assert _das28(4, 9, 25, 36) == pytest.approx(1.12 + 0.84 + esr + 0.504, abs=1e-6)  # 4.7172131
    assert _das28(4, 9, 25) == pytest.approx((1.12 + 0.84 + esr) * 1.08 + 0.16, abs=1e-6)  # 4.7102701
    assert _das28(4, 9, 24, 36, "crp") == pytest.approx(1.12 + 0.84 + crp + 0.504 + 0.96, abs=1e-6)  # 4.5827953
    assert _das28(4, 9, 24, kind="crp") == pytest.approx((1.12 + 0.84 + crp) * 1.10 + 1.15, abs=1e-6)  # 4.5806748


def test_bands_at_their_limits():
    # das-score.nl: high > 5.1, low < 3.2, remission < 2.6
    cases = {0.0: "remission", 2.59: "remission", 2.6: "low", 3.19: "low", 3.2: "moderate", 5.1: "moderate"}
    for value, band in (cases | {5.11: "high", 9.0: "high"}).items():
        assert activity.band(value) == band, value
    with pytest.raises(ValueError, match="NaN"):
        activity.band(math.nan)


def test_out_of_range_values_say_which_range():
    assert activity.value_problem("tender_28", 29) == "tender_28 29 is not an integer 0-28"
    assert activity.value_problem("swollen_28", 2.5) == "swollen_28 2.5 is not an integer 0-28"
    assert activity.value_problem("esr", 0) == "esr 0 is not > 0 mm/h"
    assert activity.value_problem("crp", -1) == "crp -1 is not >= 0 mg/L"
    assert activity.value_problem("global_health", 101) == "global_health 101 is not 0-100 mm"
    assert activity.value_problem("das28_crp", 11) == "das28_crp 11 is not 0-10"
    for name, value in (("tender_28", 28), ("swollen_28", 0), ("esr", 0.5), ("crp", 0), ("global_health", 100)):
        assert activity.value_problem(name, value) is None


def test_a_stored_score_is_kept_and_a_missing_one_computed_where_the_components_allow():
    nan = math.nan
    frame = pd.DataFrame(
        {
            "tender_28": [4, 4, nan, 4],
            "swollen_28": [9, 9, 1, 9],
            "esr": [25, 25, 20, nan],
            "crp": [nan, 24, nan, nan],
            "global_health": [36, nan, 40, 36],
            "das28_esr": [nan, nan, 3.3, nan],
            "das28_crp": [nan, nan, nan, nan],
        }
    )
    done = activity.complete(frame)
    assert done["das28_esr"].tolist()[:3] == pytest.approx([4.7172131, 4.7102701, 3.3], abs=1e-6)
    assert done["das28_esr_formula"].tolist() == ["4 variables", "3 variables", "stored", None]
    assert done["das28_crp"].iloc[1] == pytest.approx(4.5806748, abs=1e-6)
    assert done["das28_crp_formula"].tolist() == [None, "3 variables", None, None]
    assert done[["das28_esr", "das28_crp"]].iloc[3].isna().all()  # no marker: nothing to compute


def test_a_visit_takes_the_nearest_assessment_within_the_window():
    visits = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "b", "c"],
            "visit_date": [D(2020, 1, 1), D(2021, 1, 1), D(2022, 1, 1), D(2020, 1, 1), D(2020, 1, 1)],
        }
    )
    assessments = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "a", "a", "b", "b", "c"],
            "date": [
                D(2019, 12, 22),  # a, visit 1: 10 days before ...
                D(2020, 1, 6),  # ... and 5 after: the nearer one
                D(2020, 12, 27),  # a, visit 2: 5 days before and ...
                D(2021, 1, 6),  # ... 5 after: the tie goes to the earlier
                D(2022, 4, 1),  # a, visit 3: 90 days after, on the window's edge: taken
                D(2020, 4, 1),  # b: 91 days after, outside the window
                D(2019, 12, 31),  # b: the day before, but without a DAS28-ESR
                D(2020, 1, 1),  # c: the same day
            ],
            "das28_esr": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, math.nan, 7.0],
        }
    )
    joined = activity.nearest(visits, assessments, "das28_esr", window_days=90)
    assert joined["patient_id"].tolist() == visits["patient_id"].tolist()  # the visits, in their order
    np.testing.assert_array_equal(joined["das28_esr"], [2.0, 3.0, 5.0, np.nan, 7.0])
    np.testing.assert_array_equal(joined["das28_esr_days"], [5, -5, 90, np.nan, 0])
    narrow = activity.nearest(visits, assessments, "das28_esr", window_days=7)
    np.testing.assert_array_equal(narrow["das28_esr"], [2.0, 3.0, np.nan, np.nan, 7.0])


def test_changes_between_consecutive_visits_by_hand():
    visits = pd.DataFrame(
        {
            "patient_id": ["a", "b", "a", "a"],
            "visit_date": [D(2020, 1, 1), D(2020, 1, 1), D(2022, 1, 1), D(2021, 1, 1)],
            "rau": [10.0, 5.0, 40.0, 19.0],
            "das28_esr": [2.0, 3.0, 5.0, math.nan],
        }
    )
    out = activity.changes(visits, "rau", ("das28_esr",))
    assert out["from_date"].tolist() == [D(2020, 1, 1), D(2021, 1, 1)]  # b has one visit: no interval
    assert out["rau_change"].tolist() == [9.0, 21.0]
    assert out["years"].tolist() == pytest.approx([366 / 365.25, 365 / 365.25])
    assert out["rau_change_per_year"].tolist() == pytest.approx([9 * 365.25 / 366, 21 * 365.25 / 365])
    assert out["das28_esr"].isna().all()  # each interval has one visit without a DAS28


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 8, 200).astype(float)  # many ties
    y = x + rng.normal(0, 4, 200)
    assert activity.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(activity.spearman(np.ones(5), np.arange(5.0)))
    assert math.isnan(activity.spearman(np.arange(2.0), np.arange(2.0)))


def test_one_visit_per_patient_gives_scipys_pair_bootstrap():
    # with one visit per patient, resampling patients is resampling pairs: scipy.stats.bootstrap's percentile interval
    rng = np.random.default_rng(4)
    x = rng.normal(size=300)
    y = 0.3 * x + rng.normal(size=300)
    ours = activity.clustered_spearman(x, y, np.arange(300), draws=4_000, seed=1)
    theirs = stats.bootstrap(
        (x, y),
        lambda a, b: stats.spearmanr(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=4_000,
        method="percentile",
        random_state=2,
    )
    assert ours.rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert (ours.low, ours.high) == pytest.approx(
        (theirs.confidence_interval.low, theirs.confidence_interval.high), abs=0.02
    )
    assert (ours.high - ours.low) / 3.92 == pytest.approx(theirs.standard_error, rel=0.1)
    assert (ours.n, ours.patients, ours.draws) == (300, 300, 4_000)


def test_the_clustered_interval_is_wider_than_the_naive_one_when_a_patients_visits_are_alike():
    # 40 patients of 8 visits each: the visits of a patient share most of their values
    rng = np.random.default_rng(5)
    patient = np.repeat(np.arange(40), 8)
    level = rng.normal(size=(40, 2))[patient]
    x, y = level[:, 0] + 0.1 * rng.normal(size=320), 0.3 * level[:, 0] + level[:, 1] + 0.1 * rng.normal(size=320)
    clustered = activity.clustered_spearman(x, y, patient, draws=1_000)
    naive = activity.clustered_spearman(x, y, np.arange(320), draws=1_000)
    assert clustered.rho == naive.rho
    assert clustered.high - clustered.low > 2 * (naive.high - naive.low)
    assert activity.clustered_spearman(x, y, patient, draws=1_000) == clustered  # seeded


def test_relate_counts_visits_intervals_and_patients():
    rau_scores = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "b", "b", "c"],
            "visit_date": [D(2020, 1, 1), D(2021, 1, 1), D(2022, 1, 1), D(2020, 1, 1), D(2021, 1, 1), D(2020, 1, 1)],
            "rau": [1.0, 5.0, 9.0, 0.0, 2.0, None],  # c's visit has no Rau score: left out
        }
    )
    assessments = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "b", "c"],
            "date": [D(2020, 1, 2), D(2021, 1, 2), D(2022, 1, 2), D(2020, 1, 2), D(2020, 1, 2)],
            "das28_esr": [2.0, 4.0, 3.0, 5.0, 6.0],
            "das28_crp": [math.nan] * 5,  # no CRP anywhere: no CRP rows
        }
    )
    related = activity.relate(rau_scores, assessments, draws=50)
    summary = related.summary.set_index("relation")
    assert summary["score"].tolist() == ["das28_esr", "das28_esr"]
    assert summary.loc["Rau at the visit", ["n", "patients", "without_das28"]].tolist() == [4, 2, 1]
    assert summary.loc["Rau change per year", ["n", "patients", "without_das28"]].tolist() == [2, 1, 1]
    assert summary.loc["Rau at the visit", "rho"] == pytest.approx(stats.spearmanr([1, 5, 9, 0], [2, 4, 3, 5])[0])


def _export(tmp_path, activity_csv: str):
    """An export of one joint (so that ingest has labels and an image) and an activity CSV."""
    (tmp_path / "crops").mkdir()
    (tmp_path / "labels.csv").write_text("patient_id,visit_date,sop_iuid,hand_left_1\np1,2019-03-14,1.1,\n")
    (tmp_path / "activity.csv").write_text(activity_csv)
    return tmp_path


def test_ingest_writes_the_activity_table_and_reports_each_bad_row(tmp_path):
    export = _export(
        tmp_path,
        "patient_id,date,tender_28,swollen_28,esr,crp,global_health,das28_esr\n"
        "p1,2019-03-01,4,9,25,24,36,\n"  # line 2: both scores computed, 4 variables
        "p1,2019-03-01,1,1,10,,20,\n"  # 3: a second assessment on that date
        "p2,2019-13-01,1,1,10,,20,\n"  # 4: no such date
        "p2,2019-01-01,29,1,10,,20,\n"  # 5: 29 tender joints of 28
        "p2,2019-01-02,2,1,0,,20,\n"  # 6: ESR 0
        "p2,2019-01-03,,,,,,4.5\n"  # 7: stored DAS28-ESR only
        "p2,2019-01-04,2,1,,,,\n"  # 8: no marker, nothing stored
        "p3,2019-01-05,2,1,x,,,\n"  # 9: not a number
        "p3,2019-01-06,4,9,,24,,\n",  # 10: CRP only, no GH: 3 variables
    )
    code = main(
        ["ingest", "--labels", str(export / "labels.csv"), "--images", str(export / "crops")]
        + ["--out", str(export / "out"), "--activity", str(export / "activity.csv")]
    )
    assert code == 0
    table = storage.read_table(str(export / "out" / "activity"))
    assert table.schema == activity.SCHEMA
    rows = {(r["patient_id"], str(r["date"])): r for r in table.to_pylist()}
    assert sorted(rows) == [("p1", "2019-03-01"), ("p2", "2019-01-03"), ("p3", "2019-01-06")]
    first = rows["p1", "2019-03-01"]
    assert (first["tender_28"], first["das28_esr_formula"], first["das28_crp_formula"]) == (
        4,
        "4 variables",
        "4 variables",
    )
    assert first["das28_esr"] == pytest.approx(4.7172131, abs=1e-5)
    assert first["das28_crp"] == pytest.approx(4.5827953, abs=1e-5)
    assert (rows["p2", "2019-01-03"]["das28_esr"], rows["p2", "2019-01-03"]["das28_esr_formula"]) == (4.5, "stored")
    assert rows["p2", "2019-01-03"]["tender_28"] is None
    assert rows["p3", "2019-01-06"]["das28_crp"] == pytest.approx(4.5806748, abs=1e-5)
    assert rows["p3", "2019-01-06"]["das28_esr"] is None
    errors = {
        e["line"]: (e["key"], e["column"], e["reason"])
        for e in storage.read_table(f"{export}/out/activity_errors").to_pylist()
    }
    assert sorted(errors) == [3, 4, 5, 6, 8, 9]
    assert errors[3] == ("p1/2019-03-01", "date", "a second assessment of p1 on 2019-03-01 (line 2)")
    assert errors[4][1] == "date" and "unparsable date '2019-13-01'" in errors[4][2]
    assert errors[5][1:] == ("tender_28", "tender_28 29 is not an integer 0-28")
    assert errors[6][1:] == ("esr", "esr 0 is not > 0 mm/h")
    assert errors[8][1] == "das28" and errors[8][2].startswith("no DAS28")
    assert errors[9][1:] == ("esr", "esr 'x' is not a number")
    manifest = runs.manifest(str(export / "out"))
    assert (manifest.rows["activity"], manifest.rows["activity_errors"]) == (3, 6)


def test_ingest_reads_the_theses_activity_columns_through_a_column_map(tmp_path):
    # the thesis's secondary data set: patient_id, date, das28bsr_score, das28crp_score (section 3, Table 3)
    export = _export(tmp_path, "patient_id,date,das28bsr_score,das28crp_score\np1,2019-03-01,3.1,2.9\n")
    (export / "columns.json").write_text(json.dumps({"das28_esr": "das28bsr_score", "das28_crp": "das28crp_score"}))
    config = ingest.IngestConfig(
        labels=str(export / "labels.csv"),
        images=str(export / "crops"),
        out=str(export / "out"),
        activity=str(export / "activity.csv"),
        activity_columns=ingest.load_activity_columns(str(export / "columns.json")),
    )
    ingest.ingest(config)
    (row,) = storage.read_table(str(export / "out" / "activity")).to_pylist()
    assert (row["das28_esr"], row["das28_crp"]) == pytest.approx((3.1, 2.9))
    assert (row["das28_esr_formula"], row["das28_crp_formula"]) == ("stored", "stored")
    (export / "bad.json").write_text(json.dumps({"das28": "x"}))
    with pytest.raises(ValueError, match="unknown keys \\['das28'\\]"):
        ingest.load_activity_columns(str(export / "bad.json"))


def test_synth_draws_activity_from_its_own_stream_and_computes_das28_from_the_components(tmp_path):
    digests = {}
    for share in (0.0, 1.0):
        out = tmp_path / str(share)
        synth.generate(synth.SynthConfig(patients=3, out=str(out), seed=7, rows_per_file=40, activity_share=share))
        files = sorted(f for f in out.rglob("*.parquet") if "activity" not in f.parts[-2])
        digests[share] = [(f.relative_to(out), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]
    assert digests[0.0] == digests[1.0]  # the registry, ratings and truth keep their bytes
    assert not (tmp_path / "0.0" / "activity").exists()
    table = storage.read_table(str(tmp_path / "1.0" / "activity")).to_pandas()
    visits = storage.read_table(str(tmp_path / "1.0" / "registry"), ["patient_id", "visit_date"]).to_pandas()
    assert len(table) == len(visits.drop_duplicates())  # share 1: an assessment per visit
    for name in activity.COMPONENTS:
        values = table[name].dropna()
        assert all(activity.value_problem(name, v) is None for v in values), name
    gh = table["global_health"].astype(float).fillna(np.nan).to_numpy()
    counts = (table["tender_28"].astype(float), table["swollen_28"].astype(float))
    np.testing.assert_allclose(table["das28_esr"], activity.das28_esr(*counts, table["esr"], gh), rtol=1e-6)
    np.testing.assert_allclose(table["das28_crp"], activity.das28_crp(*counts, table["crp"], gh), rtol=1e-6)


def test_synthetic_das28_is_only_weakly_tied_to_erosion():
    # the thesis (section 4.7): "only a very weak correlation" between DAS and the Rau score. Drawn as generate
    # draws it, from the true erosion of 400 patients' visits (no crops rendered).
    cumulative = np.cumsum(synth.truth_mix(synth.TABLE1_MIX))
    frames = []
    for index in range(400):
        rng = np.random.default_rng([0, index])
        visits = synth._visit_dates(rng, int(rng.integers(1, 7)))
        true_rau = domain.ratingen_stage(synth._erosion_trajectories(rng, len(visits), 20, cumulative)).mean(1) * 38
        drawn = synth.activity_table(np.random.default_rng([0, index, 2]), f"p{index}", visits, true_rau, 1.0, 0.25)
        frames.append(drawn.to_pandas().assign(rau=true_rau))
    frame = pd.concat(frames)
    for score in activity.SCORES:
        result = activity.clustered_spearman(frame["rau"], frame[score], frame["patient_id"], draws=200)
        assert 0.1 < result.rho < 0.35 and result.low > 0, (score, result)
    assert 3.3 < frame["das28_esr"].mean() < 4.7


@pytest.fixture(scope="module")
def run_with_activity(small_registry, untrained_model, tmp_path_factory) -> dict:
    """A committed run of the small registry whose stages are the registry rater's (no Ray: the Rau scores follow
    from them), its model an untrained one for the card."""
    folder = tmp_path_factory.mktemp("activity_run")
    registry = storage.read_table(
        f"{small_registry}/registry", ["joint_id", "patient_id", "visit_date", "body_part", "joint"]
    )
    ratings = storage.read_table(f"{small_registry}/ratings").to_pandas()
    stages = ratings[ratings["rater"] == "registry"].set_index("joint_id")["ratingen"]
    predicted = stages.reindex(registry["joint_id"].to_pylist()).to_numpy()
    scores = registry.append_column("ratingen_pred", pa.array(predicted, pa.int8()))
    scores = scores.append_column("ratingen_expected", pa.array(predicted.astype(np.float32)))
    scores = scores.append_column("error", pa.nulls(len(scores), pa.string()))
    run = folder / "runs" / "r1"
    (run / "scores").mkdir(parents=True)
    (run / "rau").mkdir()
    pq.write_table(scores, run / "scores" / "part-0.parquet")
    pq.write_table(rau.combine([rau.partial(scores)], "r1"), run / "rau" / "part-0.parquet")
    model = untrained_model(folder / "model", SMALL_MODEL)
    manifest = runs.RunManifest(
        kind="score", run_id="r1", model=model, model_version="0" * 64, registry=f"{small_registry}/registry",
        outputs={"scores": "scores", "rau": "rau"}, rows={"total": len(scores), "scored": len(scores)},
    )  # fmt: skip
    storage.write_json(str(run / runs.MANIFEST), manifest.to_json())
    return {"run": str(run), "registry": small_registry}


@pytest.mark.slow
def test_the_report_relates_the_runs_rau_to_das28(run_with_activity):
    run, registry = run_with_activity["run"], run_with_activity["registry"]
    argv = ["report", "--scores", run, "--ratings", f"{registry}/ratings", "--activity", f"{registry}/activity"]
    assert main(argv) == 0
    tables = runs.manifest(f"{run}/report").path("tables")
    summary = pd.read_parquet(f"{tables}/activity.parquet").set_index(["relation", "score"])
    visits = pd.read_parquet(f"{tables}/activity_visits.parquet")
    assert (
        len(pd.read_parquet(f"{tables}/activity_intervals.parquet"))
        == summary.loc[("Rau change per year", "das28_esr"), "n"]
        + summary.loc[("Rau change per year", "das28_esr"), "without_das28"]
    )
    # an independent join: pandas' merge_asof, nearest within 90 days, on the run's Rau and the activity table
    rau_scores = pq.read_table(f"{run}/rau").to_pandas()
    assessments = pq.read_table(f"{registry}/activity").to_pandas()
    left = rau_scores.assign(t=pd.to_datetime(rau_scores["visit_date"])).sort_values("t")
    right = assessments.assign(t=pd.to_datetime(assessments["date"])).sort_values("t")
    joined = pd.merge_asof(
        left, right[["t", "patient_id", "das28_esr"]], on="t", by="patient_id", direction="nearest",
        tolerance=pd.Timedelta(days=90),
    )  # fmt: skip
    row = summary.loc[("Rau at the visit", "das28_esr")]
    both = joined.dropna(subset=["rau", "das28_esr"])
    assert (row["n"], row["without_das28"]) == (len(both), joined["das28_esr"].isna().sum())
    assert row["patients"] == both["patient_id"].nunique()
    assert row["rho"] == pytest.approx(stats.spearmanr(both["rau"], both["das28_esr"]).statistic, abs=1e-9)
    assert row["low"] <= row["rho"] <= row["high"]
    assert len(visits) == len(rau_scores)
    png = open(f"{tables}/figures/activity.png", "rb").read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    page = open(f"{tables}/report.html").read()
    assert "Disease activity and erosion" in page and "Table 7. Rau against disease activity" in page
    assert "figures/activity.png" in page


@pytest.mark.slow
def test_the_activity_section_leaves_in_sample_patients_out_unless_asked(run_with_activity, tmp_path):
    registry = run_with_activity["registry"]
    run = tmp_path / "r1"
    shutil.copytree(run_with_activity["run"], run)
    scores = pq.read_table(run / "scores")
    seen = scores["patient_id"][0].as_py()  # the model saw this patient in training
    in_sample = pa.array([p == seen for p in scores["patient_id"].to_pylist()])
    pq.write_table(scores.append_column("in_sample", in_sample), run / "scores" / "part-0.parquet")
    visits = {}
    for in_sample in (False, True):
        config = report.ReportConfig(
            scores=str(run), ratings=f"{registry}/ratings", activity=f"{registry}/activity", in_sample=in_sample
        )
        result = report.build(config, str(tmp_path / f"report-{in_sample}"))
        visits[in_sample] = set(result.activity.visits["patient_id"])
        assert result.activity_left_out == (0 if in_sample else 1)
        page = open(result.html).read()
        assert ("Patients left out as in-sample (the model saw them in training): 1;" in page) != in_sample
    assert seen not in visits[False] and seen in visits[True] and visits[True] - {seen} == visits[False]
