"""The agreement report of a scoring run: the model as one more rater beside the human raters.

The run's scores are joined with the ratings by joint_id into one table of stages (a row per joint the model
scored, a column per rater). Every pair of raters is compared on each subset of joints (all; each joint type;
each joint) with the statistics of :mod:`erosion.agreement`, and one ICC is computed over all raters on the
joints they all rated. Rows that cannot take part (a score with an error, a rating with no valid stage, a
duplicate, a rating of a joint the run did not score) are left out and counted, so that every input row is
accounted for. The tables are pure functions of the joined stages; :func:`build` reads, writes Parquet, plots
and renders the page; :func:`report` does it atomically (a run folder, committed when complete). On request,
:func:`explain` adds Grad-CAM heat maps of the joints the model and the humans disagree on most.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import posixpath
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from erosion import agreement, cam, checkpoint, figures, page, runs, storage
from erosion.domain import ALL_JOINTS, joint_type
from erosion.preprocess import letterbox
from erosion.split import SPLITS, split_of


@dataclass(frozen=True)
class ReportConfig:
    """What to report on and where the report goes."""

    scores: str  # a committed scoring run, <out>/<run_id>
    ratings: str  # the ratings table (one row per joint and rater)
    out: str = ""  # the report's folder; default <scores>/report
    split: str = "all"  # "all" or one of the patient splits (train, val, test) of split_seed
    split_seed: int = 0
    icc_form: str = "ICC2"  # the form the page reports; the Parquet table has all six
    venn: tuple[str, ...] = ()  # three raters; default the model and the two human raters with most joints in common
    cam: int = 0  # Grad-CAM heat maps of this many most disagreed-on joints (0: none)
    registry: str = ""  # the registry table the heat maps' crops come from; default the run's registry
    options: storage.StorageOptions = field(default_factory=storage.StorageOptions)


@dataclass(frozen=True)
class Tables:
    """The report's tables, each written as ``<name>.parquet``."""

    accounting: pd.DataFrame  # source, outcome, rows: where every input row went
    agreement: pd.DataFrame  # per subset and pair of raters: n and every statistic with its interval
    confusion: pd.DataFrame  # per subset and pair: the confusion matrix in long form
    icc: pd.DataFrame  # per subset and ICC form: the ICC over all raters on the joints they all rated
    venn: pd.DataFrame  # three raters: joints on which all, one pair or none of them agree


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it says on all joints."""

    out: str
    html: str
    raters: list[str]
    tables: Tables


def model_rater(model_version: str) -> str:
    """The model's name as a rater: its version, shortened (the page gives it whole)."""
    return f"model {model_version[:12]}"


def join_stages(
    scores: pd.DataFrame, ratings: pd.DataFrame, rater: str, split: str = "all", split_seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stages of every reportable joint by rater, and the accounting of every input row.

    ``scores`` has joint_id, patient_id, joint, ratingen_pred and error; ``ratings`` joint_id, rater and
    ratingen. The result is indexed by joint_id with a ``joint`` column and one float column per rater
    (NaN where that rater did not rate the joint), the model's column named ``rater``.
    """
    accounting = []
    error = scores["error"].notna() | scores["joint_id"].isna()
    reasons = scores.loc[error, "error"].fillna("missing key: joint_id").str.split(":").str[0]
    accounting += [("scores", f"left out, error: {reason}", n) for reason, n in reasons.value_counts().items()]
    scored = scores[~error]
    twice = scored["joint_id"].duplicated(keep=False)
    accounting.append(("scores", "left out, joint_id scored more than once", int(twice.sum())))
    scored = scored[~twice]
    if split != "all":
        inside = scored["patient_id"].map(lambda p: split_of(p, split_seed) == split).astype(bool)
        accounting.append(("scores", f"left out, patient outside the {split} split", int((~inside).sum())))
        scored = scored[inside]
    accounting.insert(0, ("scores", "used", len(scored)))

    stages = scored.set_index("joint_id")[["joint"]].assign(**{rater: scored["ratingen_pred"].to_numpy(float)})
    valid = ratings["ratingen"].between(0, agreement.NUM_STAGES - 1) & ratings["joint_id"].notna()
    twice = ratings.duplicated(["joint_id", "rater"], keep=False) & valid
    known = ratings["joint_id"].isin(stages.index)
    outcomes = np.select(
        [~valid, twice, ~known],
        ["left out, no stage in 0-5", "left out, rated more than once", "left out, joint not among the scored"],
        "used",
    )
    for (name, outcome), n in ratings.assign(outcome=outcomes).groupby(["rater", "outcome"]).size().items():
        accounting.append((f"ratings: {name}", outcome, int(n)))
    used = ratings[outcomes == "used"]
    humans = used.pivot(index="joint_id", columns="rater", values="ratingen").astype(float)
    order = sorted(humans.columns, key=lambda name: (-humans[name].notna().sum(), name))
    stages = stages.join(humans[order])
    table = pd.DataFrame(accounting, columns=["source", "outcome", "rows"])
    return stages, table[table["rows"] > 0].reset_index(drop=True)


def subsets(joints: pd.Series) -> list[tuple[str, np.ndarray]]:
    """(name, mask) of every subset: all joints, each joint type present (MCP, PIP, ...), each joint present."""
    names = joints.to_numpy(dtype=object)
    kinds = np.array([joint_type(j) for j in names], dtype=object)
    found = [(ALL_JOINTS, np.ones(len(names), bool))]
    found += [(kind, kinds == kind) for kind in sorted(set(kinds))]
    found += [(joint, names == joint) for joint in sorted(set(names))]
    return found


def pair_tables(stages: pd.DataFrame, raters: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agreement statistics and long-form confusion matrices of every pair on every subset.

    In a pair the earlier rater of ``raters`` is the reference (rows of the confusion matrix; the classes
    of the balanced accuracies), so a human is always the model's reference.
    """
    rows, cells = [], []
    for subset, mask in subsets(stages["joint"]):
        for reference, rater in itertools.combinations(raters, 2):
            both = stages.loc[mask, [reference, rater]].dropna().to_numpy(np.int64)
            counts = agreement.confusion_matrix(*both.T)
            row = {"subset": subset, "reference": reference, "rater": rater, "n": len(both)}
            rows.append(row | agreement.pair_statistics(counts))
            if len(both):
                cells.append(confusion_long(counts, subset, reference, rater))
    confusion = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(columns=_CONFUSION_COLUMNS)
    return pd.DataFrame(rows), confusion


def confusion_long(counts: np.ndarray, subset: str, reference: str, rater: str) -> pd.DataFrame:
    """A (k, k) confusion matrix in long form: one row per cell, zeros included, labelled."""
    stage = np.arange(counts.shape[0])
    return pd.DataFrame(
        {
            "subset": subset,
            "reference": reference,
            "rater": rater,
            "reference_stage": np.repeat(stage, len(stage)).astype(np.int8),
            "rater_stage": np.tile(stage, len(stage)).astype(np.int8),
            "count": counts.ravel(),
        }
    )


_CONFUSION_COLUMNS = ["subset", "reference", "rater", "reference_stage", "rater_stage", "count"]


def icc_table(stages: pd.DataFrame, raters: list[str]) -> pd.DataFrame:
    """Every ICC form over all raters, per subset, on the joints every rater rated."""
    rows = []
    for subset, mask in subsets(stages["joint"]):
        matrix = stages.loc[mask, raters].dropna().to_numpy()
        for form, description in agreement.ICC_FORMS.items():
            row = {"subset": subset, "form": form, "description": description, "raters": ", ".join(raters)}
            row |= {"n": len(matrix), "value": np.nan, "low": np.nan, "high": np.nan, "f": np.nan}
            row |= {"df1": np.nan, "df2": np.nan, "p": np.nan, "label": None, "note": None}
            try:
                result = agreement.icc(matrix, form)
            except ValueError as e:
                rows.append(row | {"note": str(e)})
                continue
            values = dataclasses.asdict(result) | {"label": result.label}
            rows.append(row | {k: v for k, v in values.items() if k != "form"})
    return pd.DataFrame(rows)


def venn_table(stages: pd.DataFrame, raters: tuple[str, ...]) -> pd.DataFrame:
    """On the joints all three raters rated: how many all three, only one pair, or none of them agree on."""
    both = stages[list(raters)].dropna().to_numpy(np.int64)
    counts = agreement.venn_counts(both[:, 0], both[:, 1], both[:, 2]) if len(both) else {}
    row = {"rater_a": raters[0], "rater_b": raters[1], "rater_c": raters[2], "n": len(both)}
    return pd.DataFrame([row | {k: counts.get(k, 0) for k in ("all", "only_ab", "only_ac", "only_bc", "none")}])


def venn_raters(stages: pd.DataFrame, humans: list[str], model: str) -> tuple[str, ...]:
    """The model and the two human raters with the most joints rated by all three; () with fewer than two humans."""
    pairs = list(itertools.combinations(humans, 2))
    if not pairs:
        return ()
    common = [int(stages[[a, b, model]].notna().all(axis=1).sum()) for a, b in pairs]
    a, b = pairs[int(np.argmax(common))]
    return (model, a, b)


def tables(stages: pd.DataFrame, accounting: pd.DataFrame, raters: list[str], venn: tuple[str, ...]) -> Tables:
    """All of the report's tables from the joined stages."""
    pairs, confusion = pair_tables(stages, raters)
    return Tables(
        accounting=accounting,
        agreement=pairs,
        confusion=confusion,
        icc=icc_table(stages, raters),
        venn=venn_table(stages, venn) if venn else pd.DataFrame(),
    )


def build(config: ReportConfig, folder: str, run: dict | None = None) -> ReportResult:
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
    model = model_rater(run["model_version"])
    columns = ["joint_id", "patient_id", "joint", "ratingen_pred", "error"]
    scores = storage.read_table(f"{config.scores.rstrip('/')}/scores", columns, config.options).to_pandas()
    ratings = storage.read_table(config.ratings, ["joint_id", "rater", "ratingen"], config.options).to_pandas()
    stages, accounting = join_stages(scores, ratings, model, config.split, config.split_seed)
    humans = [c for c in stages.columns if c not in ("joint", model)]
    if not humans:
        raise ValueError(f"no rating in {config.ratings} is of a joint scored in run {config.scores}.")
    raters = humans + [model]
    venn = tuple(config.venn) or venn_raters(stages, humans, model)
    unknown = set(venn) - set(raters)
    if unknown or len(venn) not in (0, 3):
        raise ValueError(f"the Venn diagram takes three of the raters {raters}; got {list(venn)}.")
    result = tables(stages, accounting, raters, venn)
    for name in (f.name for f in dataclasses.fields(Tables)):
        table = pa.Table.from_pandas(getattr(result, name), preserve_index=False)
        storage.write_table(f"{folder}/{name}.parquet", table, config.options)
    plots = figures.confusion_plots(result.confusion, ALL_JOINTS) | figures.venn_plot(result.venn)
    for name, png in plots.items():
        storage.write_bytes(f"{folder}/figures/{name}", png, config.options)
    explained = explain(config, run, stages, model, humans)
    for e in explained:
        if e.file:
            storage.write_bytes(f"{folder}/figures/{e.file}", e.png, config.options)
    made = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    context = page.Context(
        run=run, model=model, split=config.split, split_seed=config.split_seed, icc_form=config.icc_form, made=made
    )
    html = f"{folder}/report.html"
    storage.write_bytes(html, page.render(result, raters, plots, context, explained).encode(), config.options)
    return ReportResult(out=folder, html=html, raters=raters, tables=result)


def explain(
    config: ReportConfig, run: dict, stages: pd.DataFrame, model: str, humans: list[str]
) -> list[cam.Explanation]:
    """Grad-CAM heat maps of the ``config.cam`` joints whose model stage is furthest from the humans' mean stage.

    The model is the run's (its manifest's ``model``, checked against its version), the crops come from the
    registry, read for those joints alone. A joint whose crop is gone or no longer decodes is listed with the
    reason instead of a heat map. Each map explains the stage the run gave the joint.
    """
    chosen = cam.most_disagreed(stages, model, humans, config.cam)
    if not chosen:
        return []
    registry = config.registry or run.get("registry", "")
    if not registry:
        raise ValueError(f"run {config.scores} names no registry: give the registry the heat maps' crops come from.")
    network, card = checkpoint.load(run["model"], options=config.options)
    if card.model_version != run["model_version"]:
        raise ValueError(
            f"the model at {run['model']} is version {card.model_version}, but the run was scored with version"
            f" {run['model_version']}: its heat maps would explain another model."
        )
    images = _images(registry, chosen, config.options)
    pixels, errors = {}, {}
    for joint_id in chosen:
        try:
            pixels[joint_id] = letterbox(images[joint_id] or b"", card.model.input_size)
        except KeyError:
            errors[joint_id] = f"not in the registry: {registry}"
        except ValueError as error:
            errors[joint_id] = str(error)
    ok = list(pixels)
    heat = cam.grad_cam(network, np.stack([pixels[j] for j in ok]), stages.loc[ok, model].to_numpy()) if ok else []
    maps = dict(zip(ok, heat, strict=True))
    raters, used, explained = [model, *humans], set(), []
    for joint_id in chosen:
        rated = {r: float(stages.at[joint_id, r]) for r in raters}
        if joint_id in errors:
            explained.append(cam.Explanation(joint_id, rated, error=errors[joint_id]))
            continue
        file, copy = figures.cam_file_name(joint_id), 1
        while file in used:  # two joint ids that differ only in punctuation
            copy += 1
            file = figures.cam_file_name(f"{joint_id}-{copy}")
        used.add(file)
        title = f"{joint_id}\n" + ", ".join(f"{r}: {'-' if np.isnan(v) else int(v)}" for r, v in rated.items())
        png = cam.overlay_png(pixels[joint_id], maps[joint_id], title)
        explained.append(cam.Explanation(joint_id, rated, file=file, png=png))
    return explained


def _images(registry: str, joint_ids: list[str], options: storage.StorageOptions) -> dict[str, bytes | None]:
    """The encoded crops of a few joints: joint ids first, then images only from the files that hold them."""
    wanted = pa.array(sorted(set(joint_ids)), pa.string())
    fs, _ = storage.filesystem(registry, options)
    found: dict[str, bytes | None] = {}
    for file in storage.parquet_files(registry, options):
        ids = storage.iter_file_batches(fs, file, ["joint_id"])
        if not any(pc.any(pc.is_in(batch.column("joint_id"), wanted)).as_py() for _, batch in ids):
            continue
        for _, batch in storage.iter_file_batches(fs, file, ["joint_id", "image"], batch_size=256):
            rows = batch.filter(pc.is_in(batch.column("joint_id"), wanted))
            found |= dict(zip(rows.column("joint_id").to_pylist(), rows.column("image").to_pylist(), strict=True))
        if len(found) == len(wanted):
            break
    return found


def report(config: ReportConfig) -> ReportResult:
    """Build the report in a staging folder and commit it to ``config.out`` (default ``<scores>/report``)."""
    out = (config.out or posixpath.join(config.scores.rstrip("/"), "report")).rstrip("/")
    parent, name = posixpath.split(out)
    staging = runs.begin(parent, name, config.options)
    built = build(config, staging)
    manifest = {
        "kind": "report",
        "scores": config.scores,
        "ratings": config.ratings,
        "raters": built.raters,
        "rows": {t.source + " / " + t.outcome: int(t.rows) for t in built.tables.accounting.itertuples()},
        "config": dataclasses.asdict(config) | {"options": None},
        "committed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    runs.commit(parent, name, manifest, config.options)
    return dataclasses.replace(built, out=out, html=f"{out}/report.html")
