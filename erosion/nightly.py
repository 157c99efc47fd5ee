"""The nightly re-scoring: one dated run holding the registry's scores, Rau scores and agreement report.

A night's run scores the registry with the current model, carrying over the scores of every joint whose
image is unchanged since the last committed run made with the same model version (``erosion.carry``); a new
model version scores everything anew. The scores, the Rau scores and the agreement report (``report/``) are
staged together and committed as one run (``runs.commit``) whose manifest records the run id, the model
version, the input snapshot (every registry file with its rows, bytes and version), the configuration, the
package versions, the timings and the rows scored, carried over and failed.

Idempotent: a night whose run is already committed with the same model version and the same input snapshot
is left as it is (nothing is scored or written again); a night whose inputs changed since is run again and
replaces its earlier run, carrying over from it.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass, field

from erosion import checkpoint, report, runs, scoring, storage


@dataclass(frozen=True)
class NightlyConfig:
    """One night's run."""

    registry: str
    model: str  # the current model: a training run's folder or a checkpoint
    ratings: str  # for the agreement report
    out: str  # runs are committed to <out>/<run_id>/
    run_id: str = ""  # default: the date, UTC, e.g. 2026-11-23
    batch_size: int = 256
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 0.5
    report_split: str = "all"  # the report's joints: all, or one patient split
    options: storage.StorageOptions = field(default_factory=storage.StorageOptions)


@dataclass(frozen=True)
class NightlyResult:
    """The night's committed run, and whether this call made it."""

    run: str
    manifest: dict
    ran: bool  # False: the night was already committed with the same model and inputs; nothing was done
    report: report.ReportResult | None = None


def nightly(config: NightlyConfig) -> NightlyResult:
    """Score, carry over, report and commit one night; Ray must be initialised."""
    began = time.monotonic()
    run_id = config.run_id or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    version = checkpoint.read_card(config.model, config.options).model_version
    inputs = storage.snapshot(config.registry, config.options)
    earlier = runs.committed(config.out, config.options)
    same_night = [m for m in earlier if m.get("run_id") == run_id]
    if same_night and same_night[0].get("model_version") == version and same_night[0].get("inputs") == inputs:
        return NightlyResult(run=same_night[0]["run"], manifest=same_night[0], ran=False)
    carry_from = next((m["run"] for m in reversed(earlier) if m.get("kind") in ("score", "nightly")), "")

    staging = runs.begin(config.out, run_id, config.options)
    settings = scoring.ScoreConfig(
        registry=config.registry,
        model=config.model,
        out=config.out,
        run_id=run_id,
        batch_size=config.batch_size,
        actors=config.actors,
        gpus_per_actor=config.gpus_per_actor,
        cpus_per_actor=config.cpus_per_actor,
        options=config.options,
        carry_from=carry_from,
    )
    scored = scoring.score_into(settings, run_id, staging)
    scored_at = time.monotonic()
    reported = report.build(
        report.ReportConfig(scores=staging, ratings=config.ratings, split=config.report_split, options=config.options),
        f"{staging}/report",
        run=scored.manifest,
    )
    manifest = scored.manifest | {
        "kind": "nightly",
        "inputs": inputs,
        "ratings": config.ratings,
        "raters": reported.raters,
        "outputs": scored.manifest["outputs"] | {"report": "report/report.html"},
        "config": dataclasses.asdict(config) | {"run_id": run_id, "options": None},
        "seconds": {
            "scoring": round(scored_at - began, 3),
            "report": round(time.monotonic() - scored_at, 3),
            "total": round(time.monotonic() - began, 3),
        },
        "committed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    run = runs.commit(config.out, run_id, manifest, config.options)
    reported = dataclasses.replace(reported, out=f"{run}/report", html=f"{run}/report/report.html")
    return NightlyResult(run=run, manifest=manifest, ran=True, report=reported)
