"""Monitoring across nights: what a night's scores and inputs look like, how far they moved, and the alerts.

Each nightly run writes ``monitoring/``, one row per body part and joint type and one for all joints
(``MONITORING``), each for two scopes: ``all`` the rows of the night's run, ``new`` those the model scored tonight
(new visits, changed images; not carried over), so that a batch of new visits is seen on its own and not diluted
by a registry of 10^7 unchanged rows. Each row holds: rows scored, failed (by reason) and carried over; the
predicted stage mix, the mean probabilities and mean entropy; the statistics the decode step took of each crop as
stored (``schema.CROP``: size, bit depth, intensity mean and spread, saturated share); fixed-bin histograms of
P(eroded) = 1 - P(stage 0), the expected stage and the crops' intensity mean and spread; and the per-visit Rau
quantiles (all joints' row).
One streamed pass over the scores and one over the Rau table: memory does not grow with the registry.

The night is then compared with a reference: the previous ``reference_nights`` committed nights with a
monitoring table scored by the same model version (where there are none, by any: a new model's first night is
compared with the old model's nights), or one pinned run; their ``all`` rows pooled (``erosion.core.drift``).
Tonight's ``all`` and ``new`` rows alike are compared with it: the PSI (alerting) and the Jensen-Shannon distance
(beside it) of the stage mix, Kolmogorov-Smirnov of each histogram (alerting where D and p both pass their
thresholds), and the counts of rows and failed rows (in total and by reason) against mean +- 3 sd of the
reference nights. A new model version is an alert of its own. Every comparison is a row of ``drift/``; those over
a threshold are the run's alerts (its manifest's ``alerts``, the report page).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from erosion.core import domain, drift, schema
from erosion.core.settings import setting
from erosion.io import runs, storage

ALL = "all"  # the body part and joint type of the all-joints row; the scope of every row of the run
NEW = "new"  # the scope of the rows scored tonight (not carried over)
OTHER = "other"  # rows whose body part or joint is not one the registry contract knows
BINS = 50
HISTOGRAMS = {  # quantity -> its histogram's range
    "p_eroded": (0.0, 1.0),
    "expected_stage": (0.0, float(domain.NUM_STAGES - 1)),
    "intensity_mean": (0.0, 1.0),
    "intensity_sd": (0.0, 0.5),
}
RAU_RANGE, RAU_BINS = (0.0, (domain.NUM_STAGES - 1) * domain.RAU_JOINTS), 380  # 0.5-point bins
RAU_LEVELS = (0.1, 0.5, 0.9)
COUNTS = ("rows", "failed")  # the all-joints counts compared with the reference nights (and failed by reason)

MONITORING = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("scope", pa.string()),  # all: every row of the run; new: the rows scored tonight
        pa.field("body_part", pa.string()),
        pa.field("joint_type", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("scored", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("carried", pa.int64()),
        pa.field("errors", pa.map_(pa.string(), pa.int64())),  # failed rows by reason
        pa.field("stage_counts", pa.list_(pa.int64(), domain.NUM_STAGES)),  # the model's stages of the scored rows
        pa.field("mean_probs", pa.list_(pa.float64(), domain.NUM_STAGES)),
        pa.field("mean_entropy", pa.float64()),  # bits
        pa.field("measured", pa.int64()),  # rows with crop statistics (decoded now or carried with them)
        *(pa.field(f"mean_{f.name}", pa.float64()) for f in schema.CROP),  # bit depth: the mean (8..16)
        *(pa.field(f"hist_{name}", pa.list_(pa.int64(), BINS)) for name in HISTOGRAMS),
        pa.field("visits", pa.int64()),  # all joints' row: visits with a Rau score
        *(pa.field(f"rau_q{round(level * 100)}", pa.float64()) for level in RAU_LEVELS),
    ]
)

DRIFT = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("reference", pa.list_(pa.string())),  # the reference nights' run ids
        pa.field("scope", pa.string()),
        pa.field("body_part", pa.string()),
        pa.field("joint_type", pa.string()),
        pa.field("metric", pa.string()),  # stage_mix_psi, stage_mix_js, ks_<quantity>, count_<count>, model_version
        pa.field("value", pa.float64()),
        pa.field("p_value", pa.float64()),  # Kolmogorov-Smirnov only
        pa.field("low", pa.float64()),  # counts: the band; the others: null
        pa.field("threshold", pa.float64()),  # the value above which it alerts (counts: the band's top); null: never
        pa.field("alert", pa.bool_()),
        pa.field("message", pa.string()),
    ]
)


@dataclass(frozen=True)
class MonitorConfig:
    """What a night is compared with and when it alerts (the defaults stay quiet on an unchanged registry)."""

    reference_nights: int = setting("the reference: the previous N committed nights of the same model", 5)
    reference_run: str = setting("a pinned reference run instead (a committed nightly run)", "")
    psi: float = setting("alert when the stage mix's population stability index exceeds this", 0.2)
    ks: float = setting("alert when a Kolmogorov-Smirnov D exceeds this (and its p is below --ks-p)", 0.1)
    ks_p: float = setting("a Kolmogorov-Smirnov alert also needs its p-value below this", 0.001)
    count_sigmas: float = setting("alert when a count leaves the reference nights' mean +- this many sd", 3.0)
    count_floor: float = setting("the count band's least half-width, in rows (for counts that never varied)", 10.0)
    count_share: float = setting("the count band's least half-width, as a share of the reference mean", 0.05)
    min_rows: int = setting("compare a group's distributions only with this many scored rows on both sides", 200)


@dataclass(frozen=True)
class Alert:
    """A comparison over its threshold: what moved, where, by how much."""

    metric: str
    scope: str
    body_part: str
    joint_type: str
    value: float
    threshold: float
    message: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class _Group:
    """Running sums of one body part and joint type."""

    rows: int = 0
    scored: int = 0
    carried: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    stages: np.ndarray = field(default_factory=lambda: np.zeros(domain.NUM_STAGES, np.int64))
    probs: np.ndarray = field(default_factory=lambda: np.zeros(domain.NUM_STAGES))
    entropy: float = 0.0
    measured: int = 0
    crop: np.ndarray = field(default_factory=lambda: np.zeros(len(schema.CROP)))
    hists: dict = field(default_factory=lambda: {name: np.zeros(BINS, np.int64) for name in HISTOGRAMS})

    def add(self, batch: pa.Table) -> None:
        """Add a batch of score rows of this group."""
        self.rows += batch.num_rows
        self.carried += pc.sum(batch["carried"]).as_py() or 0
        for error in pc.drop_null(batch["error"]).to_pylist():
            self.errors[error.split(":", 1)[0]] += 1
        ok = batch.filter(pc.is_null(batch["error"]))
        self.scored += ok.num_rows
        probs = ok["probs"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, domain.NUM_STAGES)
        stages = ok["ratingen_pred"].to_numpy(zero_copy_only=False).astype(np.int64)
        self.stages += np.bincount(stages, minlength=domain.NUM_STAGES)[: domain.NUM_STAGES]
        self.probs += probs.sum(axis=0)
        self.entropy += float(drift.entropy(probs).sum())
        values = {
            "p_eroded": 1.0 - probs[:, 0],
            "expected_stage": probs @ np.arange(domain.NUM_STAGES),
        }
        crops = schema.crop_values(ok["crop"])
        measured = ~np.isnan(crops).all(axis=1)
        self.measured += int(measured.sum())
        self.crop += np.nansum(crops[measured], axis=0)
        names = [f.name for f in schema.CROP]
        for name in ("intensity_mean", "intensity_sd"):
            values[name] = crops[measured, names.index(name)]
        for name, (low, high) in HISTOGRAMS.items():
            self.hists[name] += drift.histogram(values[name], low, high, BINS)

    def merge(self, other: _Group) -> None:
        """Add another group's sums (the all-joints row)."""
        for name in ("rows", "scored", "carried", "measured", "entropy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        self.stages += other.stages
        self.probs += other.probs
        self.crop += other.crop
        for name in HISTOGRAMS:
            self.hists[name] += other.hists[name]

    def row(self, scope: str, body_part: str, joint_type: str) -> dict:
        scored, measured = max(self.scored, 1), max(self.measured, 1)
        row = {
            "scope": scope,
            "body_part": body_part,
            "joint_type": joint_type,
            "rows": self.rows,
            "scored": self.scored,
            "failed": self.rows - self.scored,
            "carried": self.carried,
            "errors": sorted(self.errors.items()),
            "stage_counts": self.stages.tolist(),
            "mean_probs": (self.probs / scored).tolist() if self.scored else None,
            "mean_entropy": self.entropy / scored if self.scored else None,
            "measured": self.measured,
        }
        for i, f in enumerate(schema.CROP):
            row[f"mean_{f.name}"] = float(self.crop[i] / measured) if self.measured else None
        return row | {f"hist_{name}": counts.tolist() for name, counts in self.hists.items()}


@dataclass(frozen=True)
class Monitored:
    """A night's monitoring: its table, its comparisons, its alerts and the nights it was compared with."""

    table: pa.Table
    drift: pa.Table
    alerts: list[Alert]
    reference: list[str]


def monitor(
    config: MonitorConfig,
    night: runs.RunManifest,
    folder: str,
    out: str,
    options: storage.StorageOptions | None = None,
) -> Monitored:
    """Summarise the night's run (its scores and Rau tables, committed or not), compare it with the reference
    nights under ``out`` and write ``monitoring/`` and ``drift/`` into ``folder``."""
    table = summarise(night.path("scores"), night.path("rau"), night.run_id, night.model_version, options)
    nights = reference(out, night.run_id, night.model_version, config, options)
    compared, alerts = compare(table, [read(m, "monitoring", options) for m in nights], config)
    for name, content in (("monitoring", table), ("drift", compared)):
        with storage.TableWriter(f"{folder}/{name}", content.schema, options=options) as writer:
            writer.write(content)
    return Monitored(table, compared, alerts, [m.run_id for m in nights])


def summarise(
    scores: str, rau_table: str, run_id: str, model_version: str, options: storage.StorageOptions | None = None
) -> pa.Table:
    """The night's monitoring table (``MONITORING``) from its scores and Rau tables, streamed."""
    groups: dict[tuple[str, str, str], _Group] = collections.defaultdict(_Group)
    columns = ["body_part", "joint", "probs", "ratingen_pred", "error", "carried"]
    measured = "crop" in storage.common_columns(scores, options)  # scores older than the crop statistics lack it
    for _, _, batch in storage.iter_batches(scores, columns + (["crop"] if measured else []), 65_536, options):
        table = pa.Table.from_batches([batch])
        if not measured:
            table = table.append_column("crop", pa.nulls(table.num_rows, schema.CROP))
        where = pc.binary_join_element_wise(pc.fill_null(table["body_part"], ""), pc.fill_null(table["joint"], ""), "/")
        by_key = collections.defaultdict(list)
        for value in pc.unique(where).to_pylist():
            by_key[_group_key(*value.split("/", 1))].append(value)
        for key, values in by_key.items():
            rows = table.filter(pc.is_in(where, pa.array(values, pa.string())))
            groups[(ALL, *key)].add(rows)
            scored = rows.filter(pc.invert(rows["carried"]))
            if scored.num_rows:
                groups[(NEW, *key)].add(scored)
    totals = {ALL: _Group()}  # written for an empty run too
    for (scope, *_), group in groups.items():
        totals.setdefault(scope, _Group()).merge(group)
    if NEW in totals and totals[NEW].rows == totals[ALL].rows:  # nothing carried: the new rows are all the rows
        groups = {key: group for key, group in groups.items() if key[0] != NEW}
        del totals[NEW]
    rows = [groups[key].row(*key) for key in sorted(groups)] + [totals[s].row(s, ALL, ALL) for s in sorted(totals)]
    rau_counts = np.zeros(RAU_BINS, np.int64)
    for _, _, batch in storage.iter_batches(rau_table, ["rau"], 65_536, options):
        rau_counts += drift.histogram(batch["rau"].to_numpy(zero_copy_only=False), *RAU_RANGE, RAU_BINS)
    for row in rows:
        everything = row["body_part"] == ALL and row["scope"] == ALL
        row["visits"] = int(rau_counts.sum()) if everything else None
        for level, value in zip(RAU_LEVELS, drift.quantiles(rau_counts, *RAU_RANGE, RAU_LEVELS), strict=True):
            row[f"rau_q{round(level * 100)}"] = value if everything and rau_counts.sum() else None
        row |= {"run_id": run_id, "model_version": model_version}
    return pa.Table.from_pylist(rows, schema=MONITORING)


def reference(
    out: str, run_id: str, model_version: str, config: MonitorConfig, options: storage.StorageOptions | None = None
) -> list:
    """The reference nights' manifests, oldest first: the pinned run, or else the last ``reference_nights``
    committed runs under ``out`` other than ``run_id`` that have a monitoring table and were scored by
    ``model_version``; where none was, the last of any model (the first night of a new model is compared with the
    old one's nights and alerts; from its second night on it is compared with its own)."""
    if config.reference_run:
        pinned = runs.manifest(config.reference_run, options)
        if "monitoring" not in pinned.outputs:
            raise ValueError(f"the reference run {config.reference_run} has no monitoring table.")
        return [pinned]
    earlier = [m for m in runs.committed(out, options) if m.run_id != run_id and "monitoring" in m.outputs]
    same = [m for m in earlier if m.model_version == model_version]
    return (same or earlier)[-config.reference_nights :] if config.reference_nights > 0 else []


def compare(tonight: pa.Table, nights: list[pa.Table], config: MonitorConfig) -> tuple[pa.Table, list[Alert]]:
    """Every comparison of tonight's monitoring table with the reference nights' (``DRIFT``), and the alerts."""
    if not nights:
        return DRIFT.empty_table(), []
    now = tonight.to_pylist()
    run_id = now[0]["run_id"]
    ids = [night["run_id"][0].as_py() for night in nights]
    pooled = _pool(nights)
    checks: list[dict] = []
    for row in now:
        key = (row["body_part"], row["joint_type"])
        if key in pooled:
            checks += _distributions(row, pooled[key], config)
    everything = next(r for r in now if r["body_part"] == ALL and r["scope"] == ALL)
    past = [next(r for r in night.to_pylist() if r["body_part"] == ALL and r["scope"] == ALL) for night in nights]
    checks += _counts(everything, past, config)
    version, earlier = everything["model_version"], past[-1]["model_version"]
    if version != earlier:
        checks.append(
            _check("model_version", everything, np.nan, np.nan, True, f"model version {version}, was {earlier}")
        )
    rows = [c | {"run_id": run_id, "reference": ids} for c in checks]
    table = pa.Table.from_pylist(rows, schema=DRIFT)
    alerts = [
        Alert(c["metric"], c["scope"], c["body_part"], c["joint_type"], c["value"], c["threshold"], c["message"])
        for c in checks
        if c["alert"]
    ]
    return table, alerts


def _distributions(row: dict, past: dict, config: MonitorConfig) -> list[dict]:
    """The stage mix's PSI and JS distance and each histogram's Kolmogorov-Smirnov test, where both sides are
    large enough."""
    if min(row["scored"], past["scored"]) < config.min_rows:
        return []
    where = ("rows scored tonight, " if row["scope"] == NEW else "") + f"{row['body_part']}/{row['joint_type']}"
    now_mix, past_mix = np.asarray(row["stage_counts"]), past["stage_counts"]
    value = drift.psi(now_mix, past_mix)
    shares = ", ".join(f"{s:.1%}" for s in drift.shares(now_mix))
    was = ", ".join(f"{s:.1%}" for s in drift.shares(past_mix))
    checks = [
        _check("stage_mix_psi", row, value, config.psi, value > config.psi,
               f"{where}: stage mix moved (PSI {value:.3f} > {config.psi}): {shares}, was {was}"),
        _check("stage_mix_js", row, drift.js_distance(now_mix, past_mix), np.nan, False, ""),
    ]  # fmt: skip
    for name in HISTOGRAMS:
        d, p = drift.ks(np.asarray(row[f"hist_{name}"]), past[f"hist_{name}"])
        if np.isnan(d):
            continue
        moved = bool(d > config.ks and p < config.ks_p)
        message = f"{where}: {name} moved (Kolmogorov-Smirnov D {d:.3f} > {config.ks}, p {p:.1e})"
        checks.append(_check(f"ks_{name}", row, d, config.ks, moved, message, p_value=p))
    return checks


def _counts(row: dict, past: list[dict], config: MonitorConfig) -> list[dict]:
    """The all-joints counts, and failed rows by reason, against mean +- k sd of the reference nights."""
    series = {name: (row[name], [night[name] for night in past]) for name in COUNTS}
    reasons = {reason for r in [row, *past] for reason, _ in r["errors"]}
    for reason in sorted(reasons):
        series[f"failed: {reason}"] = (
            dict(row["errors"]).get(reason, 0),
            [dict(n["errors"]).get(reason, 0) for n in past],
        )
    checks = []
    for name, (value, reference) in series.items():
        low, high = drift.count_band(reference, config.count_sigmas, config.count_floor, config.count_share)
        moved = not low <= value <= high
        message = f"{name}: {value:,} rows, outside {max(low, 0):,.0f}..{high:,.0f} (reference nights {reference})"
        checks.append(_check(f"count_{name}", row, float(value), high, moved, message, low=low))
    return checks


def _check(metric: str, row: dict, value: float, threshold: float, alert: bool, message: str, **more) -> dict:
    return (
        {
            "scope": row["scope"],
            "body_part": row["body_part"],
            "joint_type": row["joint_type"],
            "metric": metric,
            "value": None if np.isnan(value) else float(value),
            "threshold": None if np.isnan(threshold) else float(threshold),
            "alert": alert,
            "message": message,
        }
        | {"p_value": None, "low": None}
        | more
    )


def _pool(nights: list[pa.Table]) -> dict[tuple[str, str], dict]:
    """The reference nights' stage counts, histograms and scored rows (scope all), summed per group."""
    pooled: dict[tuple[str, str], dict] = {}
    names = ["stage_counts", *(f"hist_{name}" for name in HISTOGRAMS)]
    for night in nights:
        for row in night.to_pylist():
            if row["scope"] != ALL:
                continue
            key = (row["body_part"], row["joint_type"])
            into = pooled.setdefault(key, {"scored": 0} | {n: np.zeros(len(row[n]), np.int64) for n in names})
            into["scored"] += row["scored"]
            for name in names:
                into[name] += np.asarray(row[name], np.int64)
    return pooled


def _group_key(body_part: str, joint: str) -> tuple[str, str]:
    """A row's (body part, joint type); ``OTHER`` for one the contract does not know."""
    return (body_part, domain.joint_type(joint)) if domain.joint_problem(body_part, joint) is None else (OTHER, OTHER)


def read(run: runs.RunManifest, name: str, options: storage.StorageOptions | None = None) -> pa.Table:
    """A run's ``monitoring`` or ``drift`` table."""
    return storage.read_table(run.path(name), options=options)
