"""The scoring benchmark (``benchmark.score_throughput``), whose figures the README quotes: every rate measured on
the real parts at two sizes, the ratios of those rates, memory sampled."""

import pytest
from conftest import SMALL_MODEL

from erosion.workflows import benchmark


@pytest.mark.slow
def test_score_throughput_measures_every_rate_at_each_size_and_their_ratios(
    ray_local, small_registry, untrained_model, tmp_path
):
    model = untrained_model(tmp_path / "model", SMALL_MODEL)
    figures = benchmark.score_throughput(
        benchmark.ScoreBenchConfig(
            registry=f"{small_registry}/registry", model=model, out=str(tmp_path / "bench"), sizes=(300, 600)
        )
    )
    for size in ("300", "600"):
        rates = figures[size]
        for key in ("end_to_end", "pipeline", "model_only", "decode_only", "decode_beside_actors", "naive"):
            assert rates[f"{key}_crops_per_s"] > 0, key
        assert rates["pipeline_over_model_only"] == rates["pipeline_crops_per_s"] / rates["model_only_crops_per_s"]
        slower = min(rates["model_only_crops_per_s"], rates["decode_beside_actors_crops_per_s"])
        assert rates["pipeline_over_slower_stage"] == rates["pipeline_crops_per_s"] / slower
        assert rates["end_to_end_over_naive"] == rates["end_to_end_crops_per_s"] / rates["naive_crops_per_s"]
        assert rates["largest_worker_peak_mb"] > 0 and rates["driver_peak_uss_mb"] > 0
    growth = figures["600"]["largest_worker_peak_mb"] / figures["300"]["largest_worker_peak_mb"] - 1
    assert figures["largest_worker_peak_mb_growth"] == pytest.approx(growth)
