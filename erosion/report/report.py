"""The agreement report of a scoring run: the model as one more rater beside the human raters.

The run's scores are joined with the ratings by joint_id into one table of stages (a row per joint the model
scored, a column per rater). Every pair of raters is compared on each subset of joints (all; each joint type;
each joint) with the statistics of :mod:`erosion.core.agreement`, and one ICC is computed over all raters on the
joints they all rated. Rows that cannot take part (a score with an error, a rating with no valid stage, a
duplicate, a rating of a joint the run did not score) are left out and counted, so that every input row is
accounted for. The tables are pure functions of the joined stages (:mod:`erosion.report.tables`);
:func:`build` reads, writes Parquet, plots and renders the page; :func:`report` does it atomically (a run
folder, committed when complete). On request, :func:`explain` adds Grad-CAM heat maps of the joints the model
and the humans disagree on most, and :func:`relate_activity` the run's Rau scores against disease activity (DAS28).
"""

from __future__ import annotations

import dataclasses
import datetime
import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from erosion.core import activity, agreement
from erosion.core.domain import ALL_JOINTS, NUM_STAGES
from erosion.core.settings import setting
from erosion.core.split import SPLITS, split_of
from erosion.io import runs, storage
from erosion.io.ratings import rater_stages
from erosion.model import models
from erosion.report import cam, embedding, figures, page, tables


@dataclass(frozen=True)
class ReportConfig:
    """What to report on and where the report goes."""

    scores: str = setting("a committed scoring run, <out>/<run_id>")
    ratings: str = setting("the ratings table (one row per joint and rater)")
    out: str = setting("the report's folder; default <scores>/report", "")
    split: str = setting("only the joints of one patient split of split_seed", "all", choices=("all", *SPLITS))
    split_seed: int = setting("the seed of the patient split", 0)
    in_sample: bool = setting("also compare the joints of patients the model saw in training (in-sample)", False)
    icc_form: str = setting(
        "the form the page reports; the Parquet table has all six", "ICC2", choices=tuple(agreement.ICC_FORMS)
    )
    venn: tuple[str, ...] = setting("three comma-separated raters (default: the model and two humans)", ())
    cam: int = setting("Grad-CAM heat maps of this many most disagreed-on joints (0: none)", 0)
    registry: str = setting("the registry table the heat maps' crops come from; default the run's registry", "")
    activity: str = setting(
        "a disease-activity table (erosion ingest --activity, erosion synth): Rau against DAS28", ""
    )
    activity_window_days: int = setting("a visit takes the nearest DAS28 within this many days", 90)
    options: storage.StorageOptions = setting("S3 settings", factory=storage.StorageOptions)


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it says on all joints."""

    out: str
    html: str
    raters: list[str]
    tables: tables.Tables
    estimated: pd.DataFrame | None = None  # estimated_agreement's table; None: the model is not calibrated
    activity: activity.Relation | None = None  # Rau against DAS28; None: no activity table was given
    activity_left_out: int = 0  # patients left out of it as in-sample


def build(config: ReportConfig, folder: str, run: runs.RunManifest | None = None) -> ReportResult:
    """Read the run and the ratings, write every table, plot and the page into ``folder``.

    ``run`` is the scoring run's manifest, for a run that is not committed yet (the nightly job's staging).
    """
    if config.split != "all" and config.split not in SPLITS:
        raise ValueError(f"split must be 'all' or one of {', '.join(SPLITS)}; got {config.split!r}.")
    if config.icc_form not in agreement.ICC_FORMS:
        raise ValueError(f"icc_form must be one of {', '.join(agreement.ICC_FORMS)}; got {config.icc_form!r}.")
    if config.cam < 0:
        raise ValueError(f"cam must be a number of joints >= 0, got {config.cam}.")
    run = run or runs.manifest(config.scores, config.options)
    model = tables.model_rater(run.model_version)
    columns = ["joint_id", "patient_id", "body_part", "joint", "ratingen_pred", "error"]
    known = storage.common_columns(run.path("scores"), config.options)
    columns += ["in_sample"] if "in_sample" in known else []  # runs scored before in_sample existed lack it
    scores = storage.read_table(run.path("scores"), columns, config.options).to_pandas()
    ratings = storage.read_table(config.ratings, ["joint_id", "rater", "ratingen"], config.options).to_pandas()
    stages, accounting = tables.join_stages(scores, ratings, model, config.split, config.split_seed, config.in_sample)
    humans = [c for c in stages.columns if c not in (*tables.LABELS, model)]
    made = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    cards = list(models.resolve(run.model, config.options).cards.values())
    calibration = cards[0].calibration if len(cards) == 1 else None  # the page's reliability diagram: one model's
    against = {card.train.get("data", {}).get("rater") if card.calibration else None for card in cards}
    context = page.Context(
        run=run,
        model=model,
        split=config.split,
        split_seed=config.split_seed,
        icc_form=config.icc_form,
        made=made,
        calibration=calibration,
        in_sample=config.in_sample,
    )
    html = f"{folder}/report.html"
    if not humans:  # an empty registry, or no rating of a scored joint: the page says so, and where rows went
        empty = tables.Tables(accounting, *(pd.DataFrame() for _ in range(4)))
        storage.write_table(f"{folder}/accounting.parquet", pa.Table.from_pandas(accounting), config.options)
        storage.write_bytes(html, page.nothing_to_compare(empty, context).encode(), config.options)
        return ReportResult(out=folder, html=html, raters=[], tables=empty)
    raters = humans + [model]
    venn = tuple(config.venn) or tables.venn_raters(stages, humans, model)
    unknown = set(venn) - set(raters)
    if unknown or len(venn) not in (0, 3):
        raise ValueError(f"the Venn diagram takes three of the raters {raters}; got {list(venn)}.")
    result = tables.build_tables(stages, accounting, raters, venn)
    for name in (f.name for f in dataclasses.fields(tables.Tables)):
        table = pa.Table.from_pandas(getattr(result, name), preserve_index=False)
        storage.write_table(f"{folder}/{name}.parquet", table, config.options)
    plots = figures.confusion_plots(result.confusion, ALL_JOINTS) | figures.venn_plot(result.venn)
    if calibration:
        plots["reliability.png"] = figures.reliability_diagram(calibration)
    mapped = embedding.map_figure(config.scores, config.options)
    if mapped:
        plots["embedding.png"] = mapped
    for name, png in plots.items():
        storage.write_bytes(f"{folder}/figures/{name}", png, config.options)
    patient_of = dict(zip(scores["joint_id"], scores["patient_id"], strict=True))
    explained = explain(config, run, stages, model, humans, patient_of)
    for e in explained:
        if e.file:
            storage.write_bytes(f"{folder}/figures/{e.file}", e.png, config.options)
    calibrated_against = against.pop() if len(against) == 1 else None  # every model calibrated on one rater
    estimated = estimated_agreement(config, run, calibrated_against) if calibrated_against else None
    if estimated is not None:
        storage.write_table(f"{folder}/estimated.parquet", pa.Table.from_pandas(estimated), config.options)
    related, left_out = relate_activity(config, run, scores) if config.activity else (None, 0)
    if related is not None:
        frames = {
            "activity": related.summary,
            "activity_visits": related.visits,
            "activity_intervals": related.intervals,
        }
        for name, frame in frames.items():
            storage.write_table(f"{folder}/{name}.parquet", pa.Table.from_pandas(frame), config.options)
        if len(related.summary):  # an activity table with no DAS28 at all has nothing to plot
            plots["activity.png"] = figures.activity_plot(related)
            storage.write_bytes(f"{folder}/figures/activity.png", plots["activity.png"], config.options)
    window = config.activity_window_days
    content = page.render(result, raters, plots, context, explained, estimated, related, window, left_out)
    storage.write_bytes(html, content.encode(), config.options)
    return ReportResult(folder, html, raters, result, estimated, activity=related, activity_left_out=left_out)


def relate_activity(config: ReportConfig, run: runs.RunManifest, scores: pd.DataFrame) -> tuple[activity.Relation, int]:
    """The run's Rau scores (of ``--split``'s patients) beside the activity table's DAS28 (``activity.relate``),
    and how many patients were left out as in-sample: a patient any of whose joints the model saw in training
    (``scores``' in_sample), unless ``config.in_sample``, as the agreement tables do with joints."""
    if "rau" not in run.outputs:
        raise ValueError(f"run {config.scores} has no Rau scores to relate to disease activity.")
    rau = storage.read_table(run.path("rau"), ["patient_id", "visit_date", "rau"], config.options).to_pandas()
    if config.split != "all":
        rau = rau[[split_of(p, config.split_seed) == config.split for p in rau["patient_id"]]]
    seen = set() if config.in_sample else set(scores.loc[tables.seen_in_training(scores), "patient_id"])
    seen &= set(rau["patient_id"])
    rau = rau[~rau["patient_id"].isin(seen)]
    columns = ["patient_id", "date", *activity.SCORES]
    assessments = storage.read_table(config.activity, columns, config.options).to_pandas()
    return activity.relate(rau, assessments, config.activity_window_days), len(seen)


def explain(
    config: ReportConfig,
    run: runs.RunManifest,
    stages: pd.DataFrame,
    model: str,
    humans: list[str],
    patient_of: dict[str, str],
) -> list[cam.Explanation]:
    """Grad-CAM heat maps of the ``config.cam`` joints whose model stage is furthest from the humans' mean stage.

    The model is the run's (its manifest's ``model``: each body part's, checked against its version), the crops
    come from the registry, read for those joints alone. A joint whose crop is gone or no longer decodes is listed
    with the reason instead of a heat map. Each map explains the stage the run gave the joint, by the model that
    gave it (a fold set's: the fold model of the joint's patient, ``patient_of``).
    """
    chosen = cam.most_disagreed(stages, model, humans, config.cam)
    if not chosen:
        return []
    registry = config.registry or run.registry
    if not registry:
        raise ValueError(f"run {config.scores} names no registry: give the registry the heat maps' crops come from.")
    targets = {j: int(stages.at[j, model]) for j in chosen}
    pixels, maps, errors = cam.run_crops(run, registry, targets, patient_of, config.options)
    raters, explained = [model, *humans], []
    for joint_id in chosen:
        rated = {r: float(stages.at[joint_id, r]) for r in raters}
        if joint_id in errors:
            explained.append(cam.Explanation(joint_id, rated, error=errors[joint_id]))
            continue
        file = figures.cam_file_name(joint_id)  # unique per joint id (figures.safe_name)
        title = f"{joint_id}\n" + ", ".join(f"{r}: {'-' if np.isnan(v) else int(v)}" for r, v in rated.items())
        png = cam.overlay_png(pixels[joint_id], maps[joint_id], title)
        explained.append(cam.Explanation(joint_id, rated, file=file, png=png))
    return explained


ESTIMATES = ("estimated, not rated", "estimated, rated", "measured, rated")
"""The rows of the estimated-agreement table: the estimate where it is needed, and its check beside the truth."""


def estimated_agreement(config: ReportConfig, run: runs.RunManifest, rater: str) -> pd.DataFrame:
    """The model's expected agreement with ``rater`` (the rater it was calibrated against) on the joints that
    rater has not rated (``agreement.expected_confusion`` of the calibrated probabilities), and the same estimate
    beside the measured agreement on the joints it has rated (out of sample, unless ``config.in_sample``).

    Streams the scores (probabilities, stage, error and in-sample only) in batches: the whole registry never
    sits in memory.
    """
    stages = rater_stages(config.ratings, rater, config.options)
    index = pd.Index(stages["joint_id"].to_numpy(zero_copy_only=False), dtype=object)
    unique = ~index.duplicated(keep="last")
    index, labels = index[unique], stages["label"].to_numpy()[unique].astype(np.int64)
    known = storage.common_columns(run.path("scores"), config.options)
    columns = ["joint_id", "probs", "ratingen_pred", "error"] + ["in_sample"] * ("in_sample" in known)
    totals = {name: np.zeros((NUM_STAGES, NUM_STAGES)) for name in ESTIMATES}
    for _, _, batch in storage.iter_batches(run.path("scores"), columns, 65_536, config.options):
        batch = batch.filter(pc.and_(pc.is_null(batch["error"]), pc.is_valid(batch["probs"])))
        probs = batch["probs"].flatten().to_numpy(zero_copy_only=False).reshape(-1, NUM_STAGES)
        predicted = batch["ratingen_pred"].to_numpy(zero_copy_only=False).astype(np.int64)
        position = index.get_indexer(batch["joint_id"].to_numpy(zero_copy_only=False))
        seen = pc.fill_null(batch["in_sample"], True).to_numpy(zero_copy_only=False) if "in_sample" in known else False
        rated = (position >= 0) & (config.in_sample | ~np.asarray(seen, dtype=bool))
        unrated = position < 0
        totals["estimated, not rated"] += agreement.expected_confusion(probs[unrated], predicted[unrated])
        totals["estimated, rated"] += agreement.expected_confusion(probs[rated], predicted[rated])
        totals["measured, rated"] += agreement.confusion_matrix(labels[position[rated]], predicted[rated])
    rows = [{"joints": name, "reference": rater, "n": float(c.sum())} | agreement.pair_statistics(c)
            for name, c in totals.items()]  # fmt: skip
    return pd.DataFrame(rows)


def report(config: ReportConfig) -> ReportResult:
    """Build the report in a new attempt folder; commit it as the run ``config.out`` (default ``<scores>/report``)."""
    out = (config.out or posixpath.join(config.scores.rstrip("/"), "report")).rstrip("/")
    parent, name = posixpath.split(out)
    storage.reach(config.scores, config.ratings, out, options=config.options)
    with runs.begin(parent, name, config.options) as attempt:
        built = build(config, attempt.url)
        manifest = runs.RunManifest(
            kind="report",
            run_id=name,
            committed_at=runs.now(),
            rows={t.source + " / " + t.outcome: int(t.rows) for t in built.tables.accounting.itertuples()},
            config=dataclasses.asdict(config) | {"options": None},
            ratings=config.ratings,
            raters=built.raters,
            scores=config.scores,
            outputs={"report": attempt.output("report.html"), "tables": attempt.output("")},
        )
        attempt.commit(manifest)
    return built
