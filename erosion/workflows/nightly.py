"""The nightly re-scoring: one dated run holding the registry's scores, Rau scores and agreement report.

A night's run scores the registry with the current model, carrying over the scores of every joint whose
image is unchanged since the last committed run made with the same model version (``erosion.score.carry``): a
registry file unchanged since then is not read at all, and in the others each row's fingerprint decides. A new
model version scores everything anew. The scores, the Rau scores and the agreement report (``report/``) are
written into one attempt folder and committed together as one run (``runs.Attempt.commit``) whose manifest
records the run id, the model version, the input snapshot (every registry file with its rows, bytes and
version), the configuration, the package versions, the timings and the rows scored, carried over and failed.

Idempotent: a night whose run is already committed with the same model version and the same input snapshot
is left as it is (nothing is scored or written again); a night whose inputs changed since is run again and
replaces its earlier run, carrying over from it; the earlier run stays readable until the new one is
committed. Two runs at once: the second stops with ``leases.Held`` before writing anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass

from erosion.core.settings import setting
from erosion.core.split import SPLITS
from erosion.io import runs, storage
from erosion.model import models
from erosion.report import monitoring, report
from erosion.score import scoring


@dataclass(frozen=True)
class NightlyConfig:
    """One night's run: how to score (its run id defaults to the date, UTC), and the report's ratings."""

    scoring: scoring.ScoreConfig = setting(
        "registry, the current model, out, run_id, actors...; carry_from is set here"
    )
    ratings: str = setting("for the agreement report")
    report_split: str = setting("the report's joints: all, or one patient split", "all", choices=("all", *SPLITS))
    activity: str = setting("a disease-activity table: the report relates the night's Rau scores to DAS28", "")
    activity_window_days: int = setting("a visit takes the nearest DAS28 within this many days", 90)
    monitor: monitoring.MonitorConfig = setting(
        "what the night is compared with, and the alert thresholds", factory=monitoring.MonitorConfig
    )
    fail_on_alert: bool = setting("exit non-zero (3) after committing a night that raised an alert", False)


@dataclass(frozen=True)
class NightlyResult:
    """The night's committed run, and whether this call made it."""

    run: str
    manifest: runs.RunManifest
    ran: bool  # False: the night was already committed with the same model and inputs; nothing was done
    report: report.ReportResult | None = None


def nightly(config: NightlyConfig) -> NightlyResult:
    """Score, carry over, report and commit one night; Ray must be initialised."""
    began = time.monotonic()
    base, options = config.scoring, config.scoring.options
    run_id = base.run_id or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    storage.reach(base.registry, base.out, config.ratings, *filter(None, [config.activity]), options=options)
    if config.activity:
        storage.parquet_files(config.activity, options)  # a wrong path fails now, not after the night's scoring
    version = models.resolve(base.model, options).version
    inputs = scoring.check_registry(base.registry, options)
    earlier = runs.committed(base.out, options)
    same_night = [m for m in earlier if m.run_id == run_id]
    if same_night and same_night[0].model_version == version and same_night[0].inputs == inputs:
        return NightlyResult(run=same_night[0].run, manifest=same_night[0], ran=False)
    carry_from = next((m.run for m in reversed(earlier) if m.kind in ("score", "nightly")), "")

    with runs.begin(base.out, run_id, options, base.lease_seconds) as attempt:
        settings = dataclasses.replace(base, run_id=run_id, carry_from=carry_from)
        scored = scoring.score_into(settings, attempt, inputs)
        scored_at = time.monotonic()
        monitored = monitoring.monitor(config.monitor, scored.manifest, attempt.url, base.out, options)
        watched = dataclasses.replace(
            scored.manifest,
            alerts=[alert.to_json() for alert in monitored.alerts],
            monitored_against=monitored.reference,
            outputs=scored.manifest.outputs
            | {"monitoring": attempt.output("monitoring/"), "drift": attempt.output("drift/")},
        )
        monitored_at = time.monotonic()
        reported = report.build(
            report.ReportConfig(
                scores=attempt.run,
                ratings=config.ratings,
                split=config.report_split,
                activity=config.activity,
                activity_window_days=config.activity_window_days,
                options=options,
            ),
            f"{attempt.url}/report",
            run=watched,
        )
        manifest = dataclasses.replace(
            watched,
            kind="nightly",
            ratings=config.ratings,
            raters=reported.raters,
            outputs=watched.outputs | {"report": attempt.output("report/report.html")},
            config=scored.manifest.config
            | {
                "ratings": config.ratings,
                "report_split": config.report_split,
                "activity": config.activity,
                "activity_window_days": config.activity_window_days,
                "monitor": dataclasses.asdict(config.monitor),
            },
            seconds={
                "scoring": round(scored_at - began, 3),
                "monitoring": round(monitored_at - scored_at, 3),
                "report": round(time.monotonic() - monitored_at, 3),
                "total": round(time.monotonic() - began, 3),
            },
            committed_at=runs.now(),
        )
        committed = attempt.commit(manifest)
    return NightlyResult(run=committed.run, manifest=committed, ran=True, report=reported)
