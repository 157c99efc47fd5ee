"""Monitoring across nights: the drift rules against SciPy and worked numbers, the crop statistics against NumPy,
and nights on a real local Ray: quiet while nothing changes, alerts for over-exposed new crops and a new model."""

import dataclasses
import io
import json
import os
import shutil
import statistics

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_MODEL
from PIL import Image
from scipy import stats
from scipy.spatial import distance

from erosion.cli.main import main
from erosion.core import drift
from erosion.registry import preprocess, synth
from erosion.report import monitoring
from erosion.score import scoring
from erosion.workflows import nightly


def _on_bins(rng: np.random.Generator, n: int, bins: int, weights: np.ndarray) -> np.ndarray:
    """n values at bin centres of ``bins`` equal bins over [0, 1], bin k drawn with weight ``weights[k]``."""
    return (rng.choice(bins, size=n, p=weights / weights.sum()) + 0.5) / bins


def test_kolmogorov_smirnov_of_histograms_equals_scipys_two_sample_test_for_values_on_the_bins():
    rng = np.random.default_rng(0)
    bins = 50
    for n, m, tilt in ((300, 500, 0.0), (1000, 700, 0.3), (4000, 6000, 1.0)):
        a = _on_bins(rng, n, bins, np.ones(bins))
        b = _on_bins(rng, m, bins, np.linspace(1, 1 + tilt, bins))
        d, p = drift.ks(drift.histogram(a, 0, 1, bins), drift.histogram(b, 0, 1, bins))
        expected = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(expected.statistic, abs=1e-12)
        assert p == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)
    assert np.isnan(drift.ks(np.zeros(bins), np.ones(bins))[0])


def test_kolmogorov_smirnov_of_histograms_is_at_most_one_bin_off_for_continuous_values():
    rng = np.random.default_rng(1)
    a, b = rng.beta(2, 5, 3000), rng.beta(2.4, 5, 2000)
    d, _ = drift.ks(drift.histogram(a, 0, 1, 50), drift.histogram(b, 0, 1, 50))
    exact = stats.ks_2samp(a, b).statistic
    assert d <= exact + 1e-12 and exact - d < 0.05


def test_psi_of_a_worked_example_and_of_identical_mixes():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 (ln 2 + ln 1.5) = 0.2747
    assert drift.psi(np.array([25, 75]), np.array([50, 50])) == pytest.approx(0.25 * np.log(3), abs=1e-3)
    assert drift.psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == pytest.approx(0.0, abs=1e-12)
    assert drift.psi(np.array([0, 10]), np.array([10, 0])) > 10  # a stage absent on one side: large and finite


def test_jensen_shannon_distance_equals_its_definition_by_kullback_leibler():
    a, r = np.array([60, 25, 10, 3, 1, 1]), np.array([70, 20, 5, 3, 1, 1])
    p, q = a / a.sum(), r / r.sum()
    mid = (p + q) / 2
    expected = np.sqrt((stats.entropy(p, mid, base=2) + stats.entropy(q, mid, base=2)) / 2)
    assert drift.js_distance(a, r) == pytest.approx(expected, rel=1e-12)
    assert drift.js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert distance.jensenshannon(p, p) == drift.js_distance(a, a) == 0.0


def test_count_band_is_three_standard_deviations_with_its_floors():
    nights = [1000, 1010, 990, 1030, 970]
    low, high = drift.count_band(nights, 3, 10, 0.0)
    width = 3 * statistics.stdev(nights)
    assert (low, high) == pytest.approx((statistics.mean(nights) - width, statistics.mean(nights) + width))
    assert drift.count_band([3000] * 5, 3, 10, 0.0) == (2990, 3010)  # a constant count: the floor in rows
    assert drift.count_band([3000] * 5, 3, 10, 0.05) == (2850, 3150)  # or a share of the mean
    assert drift.count_band([3000], 3, 10, 0.0) == (2990, 3010)


def test_histogram_quantiles_bracket_numpys_and_entropy_is_scipys():
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 100, 5000)
    counts = drift.histogram(values, 0, 100, 200)
    assert counts.sum() == 5000
    for level, value in zip((0.1, 0.5, 0.9), drift.quantiles(counts, 0, 100, (0.1, 0.5, 0.9)), strict=True):
        assert value - 0.5 <= np.quantile(values, level) <= value + 1e-9
    probs = rng.dirichlet(np.ones(6), 20)
    probs[0] = [1, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(drift.entropy(probs), stats.entropy(probs, base=2, axis=1), atol=1e-12)


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_crop_statistics_equal_numpys_of_the_stored_pixels_for_16_bit_png_8_bit_jpeg_png_and_colour():
    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, (40, 30)).astype(np.uint16)
    deep[0, :5], deep[1, :3] = 0, 65535
    _, measured = preprocess.letterbox_measured(_encoded(deep, "PNG"), 64)
    share = deep / 65535.0
    saturated = np.mean((deep == 0) | (deep == 65535))
    np.testing.assert_allclose(measured, [40, 30, 16, share.mean(), share.std(), saturated], rtol=1e-9)
    grey = rng.integers(20, 200, (25, 35)).astype(np.uint8)
    data = _encoded(grey, "JPEG")
    stored = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64) / 255.0  # JPEG is lossy: what decodes
    _, measured = preprocess.letterbox_measured(data, 64)
    np.testing.assert_allclose(measured, [25, 35, 8, stored.mean(), stored.std(), 0.0], rtol=1e-9)
    grey[0, :4], grey[2, :7] = 0, 255
    colour = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    for pixels in (grey, colour):
        data = _encoded(pixels, "PNG")
        stored = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64) / 255.0
        _, measured = preprocess.letterbox_measured(data, 64)
        saturated = np.mean((stored == 0) | (stored == 1))
        np.testing.assert_allclose(measured, [25, 35, 8, stored.mean(), stored.std(), saturated], rtol=1e-9)


QUIET = monitoring.MonitorConfig(min_rows=50)  # the small registry's joint types hold tens to hundreds of rows


@pytest.fixture(scope="module")
def monitored(ray_local, small_registry, untrained_model, tmp_path_factory) -> dict:
    """Three unchanged nights; a fourth with a file of new, over-exposed visits; a fifth with a new model (by the
    command line, --fail-on-alert); a sixth, unchanged, under the new model."""
    root = tmp_path_factory.mktemp("monitoring")
    registry, out = root / "registry", str(root / "runs")
    shutil.copytree(f"{small_registry}/registry", registry)
    model = untrained_model(root / "model", SMALL_MODEL)
    other = untrained_model(root / "model-2", dataclasses.replace(SMALL_MODEL, width=0.5))

    def night(run_id: str, model: str = model) -> nightly.NightlyResult:
        settings = scoring.ScoreConfig(str(registry), model, out, run_id=run_id)
        return nightly.nightly(nightly.NightlyConfig(settings, ratings=f"{small_registry}/ratings", monitor=QUIET))

    quiet = [night(f"2026-12-0{day}") for day in (1, 2, 3)]
    bright = root / "bright"
    synth.generate(synth.SynthConfig(patients=4, out=str(bright), seed=11, exposure=1.4, max_visits=2))
    for name in os.listdir(bright / "registry"):
        shutil.copy(bright / "registry" / name, registry / f"bright-{name}")
    shifted = night("2026-12-04")
    flags = ["--registry", str(registry), "--ratings", f"{small_registry}/ratings", "--out", out, "--min-rows", "50"]
    code = main(["nightly", *flags, "--model", other, "--run-id", "2026-12-05", "--fail-on-alert"])
    settled = night("2026-12-06", other)
    page = root / "page"
    listed = main(["runs", "--out", out, "--html", str(page)])
    return {"quiet": quiet, "shifted": shifted, "code": code, "settled": settled, "out": out, "page": page,
            "listed": listed, "bright": sum(pq.read_metadata(bright / "registry" / n).num_rows
                                            for n in os.listdir(bright / "registry"))}  # fmt: skip


def _alerts(result: nightly.NightlyResult) -> dict[tuple[str, str], dict]:
    return {(a["scope"], a["metric"]): a for a in result.manifest.alerts if a["body_part"] == monitoring.ALL}


@pytest.mark.slow
def test_unchanged_nights_raise_no_alert_and_every_night_has_its_monitoring_tables(monitored):
    first, *rest = monitored["quiet"]
    assert first.manifest.monitored_against == [] and first.manifest.alerts == []
    for i, result in enumerate(rest, start=1):
        m = result.manifest
        assert m.alerts == [] and m.monitored_against == [q.manifest.run_id for q in monitored["quiet"][:i]]
        compared = monitoring.read(m, "drift").to_pandas()
        assert not compared["alert"].any()
        ks = compared[compared["metric"].str.startswith("ks_")]
        assert len(ks) and (ks["value"] == 0).all()  # the same crops and scores: the same histograms
    table = monitoring.read(rest[-1].manifest, "monitoring").to_pandas()
    totals = table[(table["scope"] == monitoring.ALL) & (table["body_part"] == monitoring.ALL)].iloc[0]
    m = rest[-1].manifest
    assert totals["rows"] == m.rows["total"] and totals["carried"] == m.rows["carried"]
    assert totals["measured"] == totals["scored"] == m.rows["total"] - m.rows["failed"]
    assert sum(totals["stage_counts"]) == totals["scored"] and 8 <= totals["mean_bit_depth"] <= 16
    parts = table[(table["scope"] == monitoring.ALL) & (table["body_part"] != monitoring.ALL)]
    assert parts["rows"].sum() == totals["rows"] and set(parts["body_part"]) <= {"hand_left", "hand_right"}
    assert totals["visits"] == pq.read_table(m.path("rau")).num_rows > 0


@pytest.mark.slow
def test_a_file_of_over_exposed_new_visits_alerts_on_the_intensity_of_the_rows_scored_tonight(monitored):
    m = monitored["shifted"].manifest
    alerts = _alerts(monitored["shifted"])
    assert m.rows["total"] - m.rows["carried"] == monitored["bright"]
    assert ("new", "ks_intensity_mean") in alerts and ("all", "count_rows") in alerts
    assert "intensity_mean moved" in alerts[("new", "ks_intensity_mean")]["message"]
    table = monitoring.read(m, "monitoring").to_pandas()
    totals = table[table["body_part"] == monitoring.ALL].set_index("scope")
    assert totals.loc["new", "rows"] == monitored["bright"]
    assert totals.loc["new", "mean_intensity_mean"] > totals.loc["all", "mean_intensity_mean"]
    assert "model_version" not in {metric for _, metric in alerts}


@pytest.mark.slow
def test_a_new_model_alerts_exits_3_with_fail_on_alert_and_its_next_night_compares_with_its_own(monitored):
    assert monitored["code"] == 3
    out = monitored["out"]
    with open(f"{out}/2026-12-05/manifest.json") as file:
        manifest = json.load(file)  # committed although it alerted
    assert any(a["metric"] == "model_version" for a in manifest["alerts"])
    assert manifest["monitored_against"] == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    settled = monitored["settled"].manifest
    assert settled.monitored_against == ["2026-12-05"] and settled.alerts == []


@pytest.mark.slow
def test_the_runs_page_shows_every_night_and_the_report_page_its_alerts(monitored):
    assert monitored["listed"] == 0
    text = (monitored["page"] / "runs.html").read_text()
    for day in range(1, 7):
        assert f"2026-12-0{day}" in text
    assert text.count("<img") >= 4 and "intensity_mean moved" in text and "model version" in text
    with open(monitored["shifted"].manifest.path("report")) as file:
        report = file.read()
    assert f"Monitoring: {len(monitored['shifted'].manifest.alerts)} alert(s)" in report
    assert "intensity_mean moved" in report
