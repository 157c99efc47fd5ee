"""The review queue: a rater's ratings that the model's out-of-sample, calibrated probabilities disagree with most.

``erosion review`` ranks (joint, rater) ratings by the expected ordinal distance of the rating from the model's
distribution (:mod:`erosion.core.review`), flags those confident learning calls issues, and queues the top N,
stratified so that no joint type and no rated stage fills the queue. Joints that another rater has already rated
are left out (they have had their second look), and so are in-sample scores unless asked for (then flagged).

The queue folder is a committed run (:mod:`erosion.io.runs`), rewritten by each review: a queued rating that has
since been rated by another rater is resolved (rating kept, or changed to the second rater's stage), moves to the
resolved table and never comes back. Outputs: ``queue.parquet`` / ``.csv``, ``resolved.parquet`` / ``.csv``,
``accounting.parquet`` and ``review.html`` with each queued crop, its Grad-CAM and its probabilities. Given the
``corrupted`` table of a synthetic registry, it also measures the queue's precision and recall beside a random
queue and a lowest-max-probability queue (``evaluation.parquet``).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from erosion.core import review
from erosion.core.domain import NUM_STAGES, joint_type
from erosion.core.settings import setting
from erosion.io import runs, storage
from erosion.report import cam, embedding, page

QUEUE_COLUMNS = ["rank", "joint_id", "patient_id", "joint", "rater", "rating", "score", "score_quadratic", "flagged",
                 "confident_stage", "in_sample", "neighbours", "probs"]  # fmt: skip
RANK_TEXT = {"model": "the model's distance", "neighbours": "the neighbours' disagreement", "sum": "the sum of the two"}
RANKINGS = tuple(RANK_TEXT)
"""What the queue ranks by: the model's expected distance, the rated neighbours' disagreement, or their sum."""
RESOLVED_COLUMNS = ["joint_id", "rater", "rating", "queued_in", "rank", "score", "resolved_in", "second_rater",
                    "second_rating", "outcome"]  # fmt: skip
"""A resolved item: the queued rating, when it was queued (the review's commit time) and at which rank, when a
second rating was found and what it was: ``kept`` (the same stage) or ``changed``."""


@dataclass(frozen=True)
class ReviewConfig:
    """Whose ratings to review, against which scoring run, and where the queue lives."""

    scores: str = setting("a committed scoring run, <out>/<run_id> (a cross-fitted model's: out of sample)")
    ratings: str = setting("the ratings table")
    out: str = setting("the queue's folder (a committed run; each review rewrites it, keeping what was resolved)")
    rater: str = setting("whose ratings to review", "registry")
    top: int = setting("places in the queue", 100)
    distance: str = setting(
        "rank by the expected |k - rating| (absolute) or (k - rating)^2 (quadratic, as quadratic kappa weighs)",
        "absolute",
        choices=("absolute", "quadratic"),
    )
    max_share: float = setting("no joint type and no rated stage takes more than this share of the places", 0.3)
    rank_by: str = setting(
        "model: the model's distance; neighbours: the mean |stage - rating| of the k nearest rated joints by"
        " embedding (a run scored with --embeddings); sum: the two added (both in stages)",
        "model",
        choices=RANKINGS,
    )
    neighbours: int = setting("k: rated neighbours per joint, where the run has embeddings", 10)
    in_sample: bool = setting("also queue joints of patients the model trained on (flagged in_sample)", False)
    corrupted: str = setting("synthetic registries: the corrupted/ table, to measure precision and recall", "")
    registry: str = setting("where the queued crops come from; default the scoring run's registry", "")
    seed: int = setting("the seed of the random queue the measurement compares with", 0)
    options: storage.StorageOptions = setting("S3 settings", factory=storage.StorageOptions)


@dataclass(frozen=True)
class ReviewResult:
    """Where the queue went and what it holds."""

    out: str
    html: str
    queue: pd.DataFrame
    resolved: pd.DataFrame
    accounting: pd.DataFrame
    evaluation: pd.DataFrame | None


def candidates(
    scores: pd.DataFrame, ratings: pd.DataFrame, rater: str, in_sample: bool
) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """The reviewable ratings of ``rater``, one row per joint (joint_id, patient_id, joint, rating, probs,
    in_sample, re_rated), and the accounting of the rater's ratings left out, by reason.

    ``scores``: joint_id, patient_id, joint, probs, error, in_sample; ``ratings``: joint_id, rater, ratingen.
    A rating out of 0-5 is left out; of a joint rated twice by the rater, the last rating counts. Unknown
    in-sample status (a model without a patients table) counts as in-sample.
    """
    valid = ratings["ratingen"].between(0, NUM_STAGES - 1)
    own = ratings[(ratings["rater"] == rater)]
    left = [("ratings of the rater", int(len(own))), ("left out, stage out of 0-5", int((~valid[own.index]).sum()))]
    own = own[valid[own.index]].drop_duplicates("joint_id", keep="last")
    others = ratings[valid & (ratings["rater"] != rater)]
    ok = scores[scores["error"].isna() & scores["joint_id"].notna()].drop_duplicates("joint_id", keep=False)
    joined = own.merge(ok, on="joint_id", how="left", validate="one_to_one")
    unscored = joined["probs"].isna()
    left.append(("left out, not scored (or scored with an error) in the run", int(unscored.sum())))
    joined = joined[~unscored].copy()
    joined["in_sample"] = joined["in_sample"].astype("boolean").fillna(True).astype(bool)
    joined["re_rated"] = joined["joint_id"].isin(others["joint_id"])
    if not in_sample:
        left.append(("left out, in-sample (the model trained on the patient)", int(joined["in_sample"].sum())))
        joined = joined[~joined["in_sample"]]
    frame = joined.rename(columns={"ratingen": "rating"})[
        ["joint_id", "patient_id", "joint", "rating", "probs", "in_sample", "re_rated"]
    ]
    return frame.reset_index(drop=True), left


def resolve(previous: pd.DataFrame, ratings: pd.DataFrame, when: str) -> pd.DataFrame:
    """The previously queued ratings that another rater has rated since: each with the second rating and whether
    the rating was kept (the second rater gave the same stage) or changed."""
    if previous.empty:
        return pd.DataFrame(columns=RESOLVED_COLUMNS)
    valid = ratings[ratings["ratingen"].between(0, NUM_STAGES - 1)]
    second = previous[["joint_id", "rater"]].merge(valid, on="joint_id", suffixes=("", "_second"))
    second = second[second["rater_second"] != second["rater"]].drop_duplicates("joint_id", keep="last")
    done = previous.merge(
        second[["joint_id", "rater_second", "ratingen"]].rename(
            columns={"rater_second": "second_rater", "ratingen": "second_rating"}
        ),
        on="joint_id",
    )
    done["resolved_in"] = when
    done["outcome"] = np.where(done["second_rating"] == done["rating"], "kept", "changed")
    return done[RESOLVED_COLUMNS]


def rank(frame: pd.DataFrame, config: ReviewConfig) -> pd.DataFrame:
    """The queue: the top ``config.top`` of ``frame`` (from :func:`candidates`, re-rated joints already out) by
    the chosen distance, stratified by joint type and rated stage, with scores, flags and ranks."""
    probs = _probs(frame)
    ratings = frame["rating"].to_numpy().astype(np.int64)
    scored = frame.assign(
        score=review.expected_distance(probs, ratings, 1),
        score_quadratic=review.expected_distance(probs, ratings, 2),
        confident_stage=review.confident_stage(probs, review.stage_thresholds(probs, ratings)),
        rater=config.rater,
    )
    scored["flagged"] = (scored["confident_stage"] >= 0) & (scored["confident_stage"] != scored["rating"])
    model = _model_distance(probs, scored, config)
    chosen = _order(scored, _ranked_by(model, scored["neighbours"].to_numpy(np.float64), config.rank_by), config)
    queue = scored.iloc[chosen].assign(rank=np.arange(1, len(chosen) + 1))
    return queue[QUEUE_COLUMNS].reset_index(drop=True)


def _model_distance(probs: np.ndarray, frame: pd.DataFrame, config: ReviewConfig) -> np.ndarray:
    """(N,) the model's expected distance from each rating, absolute or quadratic as ``config.distance`` says."""
    ratings = frame["rating"].to_numpy().astype(np.int64)
    return review.expected_distance(probs, ratings, 1 if config.distance == "absolute" else 2)


def _ranked_by(model: np.ndarray, neighbours: np.ndarray, rank_by: str) -> np.ndarray:
    """The values the queue ranks by (``RANKINGS``); a joint without neighbours ranks last where they count."""
    if rank_by == "model":
        return model
    signal = neighbours if rank_by == "neighbours" else model + neighbours
    return np.where(np.isnan(signal), -np.inf, signal)


def _order(frame: pd.DataFrame, by: np.ndarray, config: ReviewConfig) -> np.ndarray:
    """The queued rows of ``frame`` by ``by``, stratified by joint type and rated stage."""
    strata = [frame["joint"].map(joint_type).to_numpy(), frame["rating"].to_numpy().astype(np.int64)]
    return review.stratified_order(by, strata, config.top, config.max_share)


def neighbour_signal(run: runs.RunManifest, frame: pd.DataFrame, ratings: pd.DataFrame, config: ReviewConfig):
    """(N,) for each candidate of ``frame``: the mean |stage - rating| of its ``config.neighbours`` nearest joints
    rated by the rater (by embedding, same space, other patients); NaN where the run has no embedding of it."""
    if "embeddings" not in run.outputs:
        if config.rank_by != "model":
            raise ValueError(f"--rank-by {config.rank_by} needs a run scored with --embeddings; {run.run} was not.")
        return np.full(len(frame), np.nan)
    valid = ratings[(ratings["rater"] == config.rater) & ratings["ratingen"].between(0, NUM_STAGES - 1)]
    valid = valid.drop_duplicates("joint_id", keep="last")
    stages = pd.Series(valid["ratingen"].to_numpy(np.int64), index=pd.Index(valid["joint_id"], dtype=object))
    embedded = embedding.read(run, config.options)
    position = pd.Index(embedded.joints["joint_id"]).get_indexer(frame["joint_id"])
    listed = embedding.rated_neighbours(embedded, position[position >= 0], stages, config.neighbours)
    signal = np.full(len(frame), np.nan)
    signal[position >= 0] = listed["disagreement"].to_numpy()
    return signal


def evaluate(frame: pd.DataFrame, queue: pd.DataFrame, corrupted: set[str], config: ReviewConfig) -> pd.DataFrame:
    """Precision and recall of ``queue`` (ranked from ``frame``) against the corrupted ratings, beside a random
    queue and a queue of the lowest maximum probability (the model's least sure joints), each as long."""
    wrong = frame["joint_id"].isin(corrupted).to_numpy()
    probs = _probs(frame)
    places = min(config.top, len(frame))
    position = pd.Index(frame["joint_id"]).get_indexer(queue["joint_id"])
    orders = {
        f"review queue ({config.distance} distance, ranked by {config.rank_by}, stratified)": position,
        "random queue": np.random.default_rng(config.seed).permutation(len(frame))[:places],
        "lowest maximum probability": np.argsort(probs.max(axis=1), kind="stable")[:places],
    }
    neighbours = frame["neighbours"].to_numpy(np.float64)
    if not np.isnan(neighbours).all():  # the other rankings beside it, where the run has embeddings
        model = _model_distance(probs, frame, config)
        for other in (r for r in RANKINGS if r != config.rank_by):
            orders[f"ranked by {other}, stratified"] = _order(frame, _ranked_by(model, neighbours, other), config)
    rows = []
    for name, order in orders.items():
        precision, recall = review.precision_recall(order, wrong)
        rows.append({"queue": name, "places": places, "corrupted_in_queue": int(wrong[order].sum()),
                     "corrupted_candidates": int(wrong.sum()), "candidates": len(frame), "precision": precision,
                     "recall": recall})  # fmt: skip
    return pd.DataFrame(rows)


def build(config: ReviewConfig, folder: str) -> ReviewResult:
    """Read the run, the ratings and the last committed queue; write the new queue, the resolved items and the page."""
    if config.top < 1:
        raise ValueError(f"top must be at least 1, got {config.top}.")
    run = runs.manifest(config.scores, config.options)
    columns = ["joint_id", "patient_id", "joint", "probs", "error"]
    known = storage.common_columns(run.path("scores"), config.options)
    scores = storage.read_table(run.path("scores"), columns + ["in_sample"] * ("in_sample" in known), config.options)
    scores = scores.to_pandas()
    if "in_sample" not in scores:
        scores["in_sample"] = None  # a run scored before in_sample existed: unknown
    ratings = storage.read_table(config.ratings, ["joint_id", "rater", "ratingen"], config.options).to_pandas()
    previous_queue, previous_resolved = _previous(config)
    resolved_now = resolve(previous_queue, ratings, runs.now())
    resolved = (
        pd.concat([previous_resolved, resolved_now], ignore_index=True) if len(previous_resolved) else resolved_now
    )
    frame, accounting = candidates(scores, ratings, config.rater, config.in_sample)
    done = frame["joint_id"].isin(resolved["joint_id"])
    accounting.append(("left out, resolved by a second rating", int(done.sum())))
    frame = frame[~done]
    accounting.append(("left out, re-rated by another rater", int(frame["re_rated"].sum())))
    frame = frame[~frame["re_rated"]].reset_index(drop=True)
    frame["neighbours"] = neighbour_signal(run, frame, ratings, config)
    accounting.append(("candidates", len(frame)))
    queue = rank(frame, config)
    accounting.append(("queued", len(queue)))
    evaluation = None
    if config.corrupted:
        wrong = storage.read_table(config.corrupted, ["joint_id", "rater"], config.options).to_pandas()
        evaluation = evaluate(frame, queue, set(wrong.loc[wrong["rater"] == config.rater, "joint_id"]), config)
    table = pd.DataFrame(accounting, columns=["outcome", "rows"])
    _write(folder, queue, resolved, table, evaluation, config.options)
    panels = _panels(config, run, queue)
    content = _page(config, run, queue, resolved, table, evaluation, panels)
    storage.write_bytes(f"{folder}/review.html", content.encode(), config.options)
    return ReviewResult(folder, f"{folder}/review.html", queue, resolved, table, evaluation)


def queue(config: ReviewConfig) -> ReviewResult:
    """Build the queue in a new attempt folder and commit it as the run ``config.out``."""
    parent, name = posixpath.split(config.out.rstrip("/"))
    storage.reach(config.scores, config.ratings, config.out, options=config.options)
    with runs.begin(parent, name, config.options) as attempt:
        built = build(config, attempt.url)
        manifest = runs.RunManifest(
            kind="review",
            run_id=name,
            committed_at=runs.now(),
            rows=dict(zip(built.accounting["outcome"], built.accounting["rows"].astype(int), strict=True))
            | {"resolved": len(built.resolved)},
            config=dataclasses.asdict(config) | {"options": None},
            ratings=config.ratings,
            raters=[config.rater],
            scores=config.scores,
            outputs={name: attempt.output(f"{name}.parquet") for name in ("queue", "resolved", "accounting")}
            | {"review": attempt.output("review.html")},
        )
        attempt.commit(manifest)
    return built


def _previous(config: ReviewConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The queue and the resolved items of the last committed review in ``config.out`` (empty: none yet)."""
    try:
        last = runs.manifest(config.out, config.options)
    except FileNotFoundError:
        return pd.DataFrame(columns=QUEUE_COLUMNS), pd.DataFrame(columns=RESOLVED_COLUMNS)
    read = {
        name: storage.read_table(last.path(name), options=config.options).to_pandas() for name in ("queue", "resolved")
    }
    open_items = read["queue"].assign(queued_in=last.committed_at)
    return open_items, read["resolved"]


def _write(
    folder: str,
    queue: pd.DataFrame,
    resolved: pd.DataFrame,
    accounting: pd.DataFrame,
    evaluation: pd.DataFrame | None,
    options: storage.StorageOptions,
) -> None:
    probs = _probs(queue)
    table = pa.Table.from_pandas(queue.assign(probs=list(probs.astype(np.float32))), preserve_index=False)
    storage.write_table(f"{folder}/queue.parquet", table, options)
    flat = queue.drop(columns="probs").assign(**{f"p{k}": probs[:, k] for k in range(NUM_STAGES)})
    storage.write_bytes(f"{folder}/queue.csv", flat.to_csv(index=False).encode(), options)
    resolved = resolved.astype({"rank": "int64", "rating": "int64", "second_rating": "int64", "score": "float64"})
    storage.write_table(f"{folder}/resolved.parquet", pa.Table.from_pandas(resolved, preserve_index=False), options)
    storage.write_bytes(f"{folder}/resolved.csv", resolved.to_csv(index=False).encode(), options)
    storage.write_table(f"{folder}/accounting.parquet", pa.Table.from_pandas(accounting, preserve_index=False), options)
    if evaluation is not None:
        storage.write_table(f"{folder}/evaluation.parquet", pa.Table.from_pandas(evaluation), options)


def _panels(config: ReviewConfig, run: runs.RunManifest, queue: pd.DataFrame) -> dict[str, bytes | str]:
    """joint_id -> a PNG of the crop, its Grad-CAM for the model's most probable stage and the probabilities; or
    why there is none. The heat map comes from the model that scored the joint (a fold set: the patient's fold)."""
    if queue.empty:
        return {}
    registry = config.registry or run.registry
    probs = _probs(queue).astype(np.float64)
    targets = dict(zip(queue["joint_id"], probs.argmax(axis=1).tolist(), strict=True))
    patients = dict(zip(queue["joint_id"], queue["patient_id"], strict=True))
    pixels, heat, panels = cam.run_crops(run, registry, targets, patients, config.options)
    for item, p in zip(queue.itertuples(), probs, strict=True):
        if item.joint_id in panels:
            continue
        title = f"#{item.rank} {item.joint_id}\n{config.rater}: stage {item.rating}"
        panels[item.joint_id] = cam.overlay_png(
            pixels[item.joint_id], heat[item.joint_id], title, probs=p, rating=int(item.rating)
        )
    return panels


def _page(
    config: ReviewConfig,
    run: runs.RunManifest,
    queue: pd.DataFrame,
    resolved: pd.DataFrame,
    accounting: pd.DataFrame,
    evaluation: pd.DataFrame | None,
    panels: dict[str, bytes | str],
) -> str:
    distance = "sum_k p_k |k - y|" if config.distance == "absolute" else "sum_k p_k (k - y)^2"
    parts = [
        f"<h1>Review queue: {len(queue)} rating(s) of {html.escape(config.rater)} to look at again</h1>",
        f"<p>The ratings of {html.escape(config.rater)} that the model's calibrated probabilities disagree with most,"
        f" ranked by the expected distance in stages between the rating y and the model's distribution ({distance}),"
        f" with no joint type and no rated stage taking more than {config.max_share:.0%} of the places while other"
        " candidates remain. <b>Flagged</b>: confident learning calls the rating an issue (the model's confident"
        " stage, the most probable among those whose probability reaches the mean probability that stage gets on"
        " the joints rated with it, differs from the rating). A second rating of a queued joint, ingested as"
        " another rater, resolves it at the next review.</p>",
        f"<p><b>Neighbours</b>: the mean |stage - rating| of the {config.neighbours} joints the rater rated whose"
        " crops the model embeds nearest (its penultimate layer; other patients only; '-': the run was scored"
        " without --embeddings), a second signal that never looks at the model's probabilities. The queue is ranked"
        f" by {RANK_TEXT[config.rank_by]}.</p>",
        f"<p class='note'>Scores: run {html.escape(run.run_id)}, model {html.escape(run.model_version)}"
        + (" (in-sample joints included and marked)." if config.in_sample else " (out-of-sample joints only).")
        + "</p>",
        page.table("Where the rater's ratings went (accounting.parquet)", accounting),
    ]
    if evaluation is not None:
        shown = evaluation.assign(precision=evaluation["precision"].map("{:.3f}".format),
                                  recall=evaluation["recall"].map("{:.3f}".format))  # fmt: skip
        parts.append(page.table("Against the ratings corrupted on purpose (evaluation.parquet)", shown))
    if len(resolved):
        counts = resolved.groupby("outcome").size().rename("ratings").reset_index()
        parts.append(page.table("Resolved by a second rating (resolved.parquet)", counts))
    parts.append(page.table("The queue, best first (queue.parquet, queue.csv)", _listing(queue, panels), escape=False))
    return page.document(f"Erosion review queue, {config.rater}", parts)


def _listing(queue: pd.DataFrame, panels: dict[str, bytes | str]) -> pd.DataFrame:
    """The queue as the page shows it, one row per item with its crop, heat map and probabilities (HTML cells)."""
    cells = []
    for item in queue.itertuples():
        panel, name = panels.get(item.joint_id, ""), html.escape(item.joint_id)
        if isinstance(panel, bytes):
            image = f'<img src="data:image/png;base64,{base64.b64encode(panel).decode()}" alt="{name}"'
            cells.append(f'{image} style="width:480px;max-width:none"><br><span class="small">{name}</span>')
        else:
            cells.append(f"{name}: no crop ({html.escape(panel)})")
    return pd.DataFrame(
        {
            "#": queue["rank"],
            "Joint": queue["joint"].map(html.escape),
            "Rating": queue["rating"],
            "Score": queue["score"].map("{:.2f}".format),
            "Quadratic": queue["score_quadratic"].map("{:.2f}".format),
            "Flagged": queue["flagged"].map({True: "yes", False: "no"}),
            "Confident stage": queue["confident_stage"].map(lambda s: "none" if s < 0 else str(s)),
            "In sample": queue["in_sample"].map({True: "yes", False: "no"}),
            "Neighbours": queue["neighbours"].map(lambda v: "-" if np.isnan(v) else f"{v:.2f}"),
            "Crop, Grad-CAM, probabilities (joint id)": cells,
        }
    )


def _probs(frame: pd.DataFrame) -> np.ndarray:
    """(N, 6) the ``probs`` column of a frame of candidates or queued ratings as one array."""
    return np.stack(frame["probs"].to_numpy()) if len(frame) else np.zeros((0, NUM_STAGES))
