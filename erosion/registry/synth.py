"""A synthetic registry with ground truth: patients, visits, radiograph-like joint crops, simulated raters.

The source registry is private, so every test, demo and benchmark runs on this. Design choices:

* Class mix. Table 1 of the paper is the mix of the raters' labels, not of the truth: the ``registry`` rater's
  stages follow the target mix (Table 1 by default), and the true mix is the one whose readings by that rater
  have it (:func:`truth_mix`). Each (patient, hand, joint) gets a latent Gaussian trajectory, correlated within
  the patient (some patients have aggressive disease) and across visits; its values are mapped to uniforms,
  sorted in time (erosion never heals) and read through the inverse CDF of the true mix. Sorting keeps the
  multiset, so over all rows the true stage mix is that mix.
* Crops come from :func:`erosion.registry.phantom.render_joint` and are encoded as JPEG (most), 8-bit PNG and
  16-bit PNG, as a real export would mix them.
* Raters. ``registry`` rates every joint; ``rescorer_1`` and ``rescorer_2`` re-rate a random subset of
  radiographs, enriched for eroded ones like the paper's class-balanced re-scoring set. Each rater has
  its own bias and noise on the % scale, the noise growing with the erosion (a small erosion is missed or
  over-called rather than misjudged by a stage), so that pairwise quadratic kappa on the re-scored joints
  lands near the paper's 0.55-0.7.
* Disease activity. Each visit has, most of the time, a DAS28 assessment near it, its components drawn from a
  latent activity weakly tied to the visit's erosion (:func:`activity_table`), from a generator of its own.
* Streaming. Patients are drawn one at a time from their own seeded generator and written to
  bounded-size files, so memory does not grow with the registry and the same seed gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image
from scipy.optimize import lsq_linear

from erosion.core import activity, domain, schema
from erosion.core.settings import setting
from erosion.io import runs, storage
from erosion.registry.phantom import render_joint

TABLE1_MIX = (0.675, 0.272, 0.023, 0.010, 0.006, 0.014)
"""Ratingen class mix of the source registry's 102,265 left-hand crops (Rohrbach et al. 2019, Table 1)."""

HAND_JOINTS = tuple(j for j in domain.HAND_JOINTS if j != "wrist")
"""The ten finger joints of a hand radiograph that the registry crops (and the wrist with ``wrists``)."""


@dataclass(frozen=True)
class Rater:
    """A simulated human rater: how they misread the true % eroded surface."""

    name: str
    bias_pct: float  # added to every eroded joint's %
    scale: float  # multiplies the true % (over- or under-estimation that grows with erosion)
    noise: float  # standard deviation of the reading as a share of the true % (0.64: 32 points at 50 %)
    miss_small: float  # chance to call an erosion under 20 % healthy
    over_call: float  # chance to call a healthy joint slightly eroded


RATERS = (
    Rater("registry", bias_pct=0.0, scale=1.0, noise=0.64, miss_small=0.4, over_call=0.18),
    Rater("rescorer_1", bias_pct=5.0, scale=1.15, noise=0.736, miss_small=0.3, over_call=0.3),
    Rater("rescorer_2", bias_pct=-4.0, scale=0.85, noise=0.704, miss_small=0.5, over_call=0.2),
)


@dataclass(frozen=True)
class SynthConfig:
    """What the synthetic registry looks like and where it goes."""

    patients: int = setting("number of patients; each has 1..max_visits visits")
    out: str = setting("folder (local or s3://) that receives registry/, ratings/, truth/, activity/, manifest.json")
    seed: int = setting("the same seed gives the same bytes", 0)
    class_mix: tuple[float, ...] = setting(
        "stage 0..5 fractions of the registry rater's stages over all joints (the true mix follows from it)",
        TABLE1_MIX,
    )
    body_parts: tuple[str, ...] = setting(
        "comma-separated (hand_left, hand_right, foot_left, foot_right); one radiograph of each per visit",
        ("hand_left", "hand_right"),
    )
    wrists: bool = setting(
        "also the wrist among each hand's joints (the Rau score's; off: the paper's finger crops)", False
    )
    max_visits: int = setting("visits per patient are uniform in 1..max_visits, months to years apart", 6)
    rescored_fraction: float = setting("chance that the two re-scorers also rate a radiograph", 0.1)
    rescore_enrichment: float = setting(
        "the re-scoring chance times this for a radiograph with erosion of stage 2 or more", 5.0
    )
    rows_per_file: int = setting("joints per Parquet file: bounds memory and file size", 5_000)
    jpeg_share: float = setting("share of JPEG crops; the rest is split 60/40 between 8-bit and 16-bit PNG", 0.8)
    exposure: float = setting(
        "multiplies every crop's intensities before encoding, clipped to the range (1: as drawn; 1.4: over-exposed,"
        " as a new X-ray unit or export setting might deliver)",
        1.0,
    )
    corrupt_share: float = setting(
        "share of the registry rater's ratings replaced by a stage at least 2 away, listed in corrupted/", 0.0
    )
    activity_share: float = setting(
        "share of visits with a disease-activity assessment (DAS28 components) near them, in activity/ (0: none)", 0.85
    )
    activity_tie: float = setting(
        "correlation of a visit's latent disease activity with its erosion (log 1 + true Rau); the thesis found"
        " DAS28 only weakly tied to Rau",
        0.25,
    )


def generate(config: SynthConfig, options: storage.StorageOptions | None = None) -> runs.RunManifest:
    """Write the registry, its ratings and the ground truth; returns the manifest (also written as JSON)."""
    _check(config)
    started = time.perf_counter()
    true_mix = truth_mix(config.class_mix)
    cumulative = np.cumsum(true_mix)
    writers = {
        name: storage.TableWriter(f"{config.out.rstrip('/')}/{name}", table_schema, config.rows_per_file, options)
        for name, table_schema in (
            ("registry", schema.REGISTRY),
            ("ratings", schema.RATINGS),
            ("truth", schema.TRUTH),
        )
        + ((("corrupted", schema.CORRUPTED),) if config.corrupt_share else ())
        + ((("activity", activity.SCHEMA),) if config.activity_share else ())
    }
    for index in range(config.patients):
        tables = patient_tables(config, index, cumulative)
        for name, table in tables.items():
            writers[name].write(table)
    files = {name: writer.close() for name, writer in writers.items()}
    seconds = time.perf_counter() - started
    manifest = runs.RunManifest(
        kind="synth",
        committed_at=runs.now(),
        rows={name: writer.rows for name, writer in writers.items()},
        seconds={"total": round(seconds, 2)},
        config=asdict(config) | {"truth_mix": [round(float(m), 5) for m in true_mix]},
        files={name: len(paths) for name, paths in files.items()},
    )
    storage.write_json(f"{config.out.rstrip('/')}/{runs.MANIFEST}", manifest.to_json(), options)
    return manifest


def patient_tables(config: SynthConfig, index: int, cumulative: np.ndarray) -> dict[str, pa.Table]:
    """The registry, ratings and truth rows of one patient, from the patient's own generator."""
    rng = np.random.default_rng([config.seed, index])
    patient_id = "p" + hashlib.blake2b(f"{config.seed}/{index}".encode(), digest_size=6).hexdigest()
    visits = _visit_dates(rng, int(rng.integers(1, config.max_visits + 1)))
    parts = [(part, radiograph_joints(part, config.wrists)) for part in config.body_parts]
    pct = _erosion_trajectories(rng, len(visits), sum(len(joints) for _, joints in parts), cumulative)
    registry, truth, ratings = [], [], []
    for v, visit in enumerate(visits):
        start = 0
        for part, joints in parts:
            part_pct = pct[v, start : start + len(joints)]
            start += len(joints)
            sop_iuid = "2.25." + str(
                int(hashlib.blake2b(f"{patient_id}/{v}/{part}".encode(), digest_size=15).hexdigest(), 16)
            )
            enrich = config.rescore_enrichment if part_pct.max() > 20 else 1
            raters = RATERS if rng.random() < config.rescored_fraction * enrich else RATERS[:1]
            for joint, true_pct in zip(joints, part_pct.tolist(), strict=True):
                joint_id = f"{sop_iuid}/{joint}"
                pixels = render_joint(rng, true_pct, joint)
                if config.exposure != 1.0:
                    pixels = np.clip(pixels * np.float32(config.exposure), 0.0, 1.0)
                image = _encode(rng, pixels, config.jpeg_share)
                registry.append((joint_id, patient_id, visit, sop_iuid, part, joint, image))
                truth.append((joint_id, true_pct, domain.ratingen_stage(true_pct)))
            for rater in raters:
                for joint, read in zip(joints, _read(rng, rater, part_pct).tolist(), strict=True):
                    ratings.append((f"{sop_iuid}/{joint}", rater.name, read, domain.ratingen_stage(read)))
    tables = {
        "registry": _table(registry, schema.REGISTRY),
        "truth": _table(truth, schema.TRUTH),
        "ratings": _table(ratings, schema.RATINGS),
    }
    if config.corrupt_share:
        rng = np.random.default_rng([config.seed, index, 1])  # its own stream: the rest stays byte for byte the same
        tables["ratings"], tables["corrupted"] = corrupt(tables["ratings"], RATERS[0].name, config.corrupt_share, rng)
    if config.activity_share:
        rau = domain.ratingen_stage(pct).mean(axis=1) * 38  # the visits' true Rau scores
        rng = np.random.default_rng([config.seed, index, 2])  # its own stream, as the corruption's
        tables["activity"] = activity_table(rng, patient_id, visits, rau, config.activity_share, config.activity_tie)
    return tables


SEVERITY = (2.44, 0.96)
"""Mean and standard deviation of log(1 + true Rau) over the visits of a registry of Table 1's mix: the erosion,
standardised, that a visit's disease activity is tied to."""


def activity_table(
    rng: np.random.Generator, patient_id: str, visits: list[dt.date], rau: np.ndarray, share: float, tie: float
) -> pa.Table:
    """Disease-activity assessments of one patient's visits (schema ``activity.SCHEMA``), DAS28 computed from
    drawn components.

    A latent activity per visit, standard normal: ``tie`` times the visit's standardised erosion plus a patient's
    level and the visit's own noise (half each). Tender and swollen joints of 28 are binomial, ESR and CRP
    log-normal, the patient global normal on 0-100 mm (missing at 5 % of assessments: the 3-variable formulas),
    each rising with the latent activity; so DAS28 follows it with noise of its own (DAS28-ESR about 4.0 +- 1.3,
    DAS28-CRP 3.7 +- 1.2, as in RA cohorts). About ``share`` of the visits have an assessment, 0-45 days before
    or after the visit.
    """
    n = len(visits)
    severity = (np.log1p(rau) - SEVERITY[0]) / SEVERITY[1]
    noise = math.sqrt(0.5) * rng.standard_normal() + math.sqrt(0.5) * rng.standard_normal(n)
    latent = tie * severity + math.sqrt(1 - tie**2) * noise
    frame = pd.DataFrame(
        {
            "patient_id": patient_id,
            "date": [v + dt.timedelta(days=int(d)) for v, d in zip(visits, rng.integers(-45, 46, n), strict=True)],
            "tender_28": rng.binomial(28, 1 / (1 + np.exp(1.8 - 1.1 * latent))).astype(float),
            "swollen_28": rng.binomial(28, 1 / (1 + np.exp(2.3 - 0.9 * latent))).astype(float),
            "esr": np.maximum(1.0, np.round(15 * np.exp(0.35 * latent + 0.5 * rng.standard_normal(n)))),
            "crp": np.round(np.maximum(0.0, 6 * np.exp(0.55 * latent + 0.8 * rng.standard_normal(n)) - 1), 1),
            "global_health": np.clip(np.round(35 + 16 * latent + 14 * rng.standard_normal(n)), 0, 100),
            "das28_esr": np.nan,
            "das28_crp": np.nan,
        }
    )
    frame.loc[rng.random(n) < 0.05, "global_health"] = np.nan
    return activity.to_table(activity.complete(frame)[rng.random(n) < share])


def radiograph_joints(body_part: str, wrists: bool = False) -> tuple[str, ...]:
    """The joints the registry crops from one radiograph of ``body_part``: a hand's ten finger joints (and its
    wrist), a foot's five MTP joints."""
    if body_part.startswith("foot"):
        return domain.FOOT_JOINTS
    return HAND_JOINTS + (("wrist",) if wrists else ())


def corrupt(ratings: pa.Table, rater: str, share: float, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """Replace about ``share`` of ``rater``'s ratings by a stage at least 2 away from the one read (uniform among
    those), with a % inside that stage; returns the ratings and the replaced ones (schema ``CORRUPTED``)."""
    stages = ratings["ratingen"].to_numpy().astype(np.int64)
    chosen = (ratings["rater"].to_numpy(zero_copy_only=False) == rater) & (rng.random(len(stages)) < share)
    new = stages.copy()
    for i in np.flatnonzero(chosen):
        far = [k for k in range(domain.NUM_STAGES) if abs(k - stages[i]) >= 2]
        new[i] = far[int(rng.integers(len(far)))]
    lower = np.asarray((0.0,) + domain.STAGE_UPPER_PCT[:-1])[new]
    upper = np.asarray(domain.STAGE_UPPER_PCT)[new]
    inside = np.where(new > 0, np.floor(lower + 1 + (upper - lower - 1) * rng.random(len(new))), 0.0)
    pct = np.where(chosen, inside, ratings["erosion_pct"].to_numpy(zero_copy_only=False))
    replaced = ratings.set_column(2, "erosion_pct", pa.array(pct, pa.float32())).set_column(
        3, "ratingen", pa.array(new, pa.int8())
    )
    listed = pa.table(
        {
            "joint_id": ratings["joint_id"].filter(pa.array(chosen)),
            "rater": ratings["rater"].filter(pa.array(chosen)),
            "ratingen_read": pa.array(stages[chosen], pa.int8()),
            "ratingen": pa.array(new[chosen], pa.int8()),
        },
        schema=schema.CORRUPTED,
    )
    return replaced.cast(schema.RATINGS), listed


def _table(rows: list[tuple], table_schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in table_schema]
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, table_schema, strict=True)], schema=table_schema
    )


def _visit_dates(rng: np.random.Generator, n: int) -> list[dt.date]:
    """n consultation dates, the first in 2008-2019, then every 6 to 30 months."""
    first = dt.date(2008, 1, 1) + dt.timedelta(days=int(rng.integers(0, 12 * 365)))
    gaps = np.concatenate([[0], np.cumsum(rng.integers(180, 900, size=n - 1))])
    return [first + dt.timedelta(days=int(g)) for g in gaps]


def _erosion_trajectories(rng: np.random.Generator, visits: int, joints: int, cumulative: np.ndarray) -> np.ndarray:
    """True % eroded, shape (visits, joints): non-decreasing over visits, stage mix as ``cumulative``."""
    patient = rng.standard_normal()
    joint_level = math.sqrt(0.2) * patient + math.sqrt(0.8) * rng.standard_normal(joints)
    latent = 0.9 * joint_level + math.sqrt(1 - 0.9**2) * rng.standard_normal((visits, joints))
    uniform = np.sort(0.5 * (1.0 + np.vectorize(math.erf)(latent / math.sqrt(2.0))), axis=0)
    return _pct_from_uniform(uniform, cumulative)


def _pct_from_uniform(u: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Inverse CDF of the % distribution: stage by ``cumulative``, then a monotone position inside the stage.

    Eroded joints start at 5 % of their stage's range; half of stage 5 is fully destroyed (100 %), as in the
    thesis's histogram of the source registry.
    """
    stage = np.minimum(np.searchsorted(cumulative, u, side="right"), domain.NUM_STAGES - 1)
    low = np.concatenate([[0.0], cumulative[:-1]])[stage]
    width = np.asarray(cumulative)[stage] - low
    local = np.clip((u - low) / np.where(width > 0, width, 1.0), 0.0, 1.0)
    upper = np.asarray(domain.STAGE_UPPER_PCT)[stage]
    lower = np.where(stage > 0, np.asarray((0.0,) + domain.STAGE_UPPER_PCT[:-1])[stage], 0.0)
    within = np.where(stage == 5, np.minimum(local / 0.5, 1.0), local)
    pct = lower + (upper - lower) * (0.05 + 0.95 * within)
    return np.where(stage == 0, 0.0, np.round(pct, 1))


def _read(rng: np.random.Generator, rater: Rater, true_pct: np.ndarray) -> np.ndarray:
    """A rater's readings of joints (their true %), in whole % as raters write them down: a healthy joint is
    over-called now and then (1-14 %), an erosion under 20 % missed now and then, any other reading off by
    noise in proportion to the erosion."""
    n = len(true_pct)
    chance, over, normal = rng.random(n), rng.integers(1, 15, n), rng.standard_normal(n)
    read = np.clip(np.round(rater.scale * true_pct + rater.bias_pct + rater.noise * true_pct * normal), 1.0, 100.0)
    read = np.where((true_pct <= 20.0) & (chance < rater.miss_small), 0.0, read)
    return np.where(true_pct == 0.0, np.where(chance < rater.over_call, over, 0.0), read).astype(np.float64)


def truth_mix(rated_mix: tuple[float, ...], rater: Rater = RATERS[0], draws: int = 20_000) -> np.ndarray:
    """The true stage mix whose readings by ``rater`` have the stage mix ``rated_mix``.

    The rater's reading as a true-stage -> read-stage matrix (seeded Monte Carlo over each stage's range of %),
    inverted by bounded least squares: each true share within a factor of 1.5 of its rated share, so that no
    stage of the truth vanishes. Stages absent from ``rated_mix`` stay absent.
    """
    rated = np.asarray(rated_mix, dtype=np.float64)
    rng = np.random.default_rng(0)
    cumulative = np.cumsum(rated)
    present = np.flatnonzero(rated > 0)
    reading = np.zeros((len(present), domain.NUM_STAGES))
    for row, stage in enumerate(present):
        low = cumulative[stage - 1] if stage else 0.0
        pct = _pct_from_uniform(low + (cumulative[stage] - low) * rng.random(draws), cumulative)
        reading[row] = np.bincount(domain.ratingen_stage(_read(rng, rater, pct)), minlength=domain.NUM_STAGES) / draws
    system = np.vstack([reading.T, 100.0 * np.ones(len(present))])  # the last row: the shares sum to 1
    target = np.concatenate([rated, [100.0]])
    solved = lsq_linear(system, target, bounds=(rated[present] / 1.5, rated[present] * 1.5)).x
    mix = np.zeros(domain.NUM_STAGES)
    mix[present] = solved / solved.sum()
    return mix


def _encode(rng: np.random.Generator, pixels: np.ndarray, jpeg_share: float) -> bytes:
    """Encode a [0, 1] crop as JPEG (quality 75-95), 8-bit PNG or 16-bit PNG."""
    kind = rng.random()
    buffer = io.BytesIO()
    if kind < jpeg_share:
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
    elif kind < jpeg_share + 0.6 * (1 - jpeg_share):
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buffer, "PNG")
    else:
        Image.fromarray(np.round(pixels * 65535).astype(np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def _check(config: SynthConfig) -> None:
    if config.patients < 1:
        raise ValueError(f"patients must be >= 1, got {config.patients}.")
    if len(config.class_mix) != domain.NUM_STAGES or abs(sum(config.class_mix) - 1) > 1e-6 or min(config.class_mix) < 0:
        raise ValueError(
            f"class_mix must be {domain.NUM_STAGES} non-negative fractions summing to 1, got {config.class_mix}."
        )
    unknown = [part for part in config.body_parts if part not in domain.BODY_PARTS]
    if unknown or not config.body_parts or len(set(config.body_parts)) < len(config.body_parts):
        known = ", ".join(domain.BODY_PARTS)
        raise ValueError(f"body_parts must be distinct ones of {known}; got {config.body_parts}.")
    if not config.exposure > 0:
        raise ValueError(f"exposure must be > 0, got {config.exposure}.")
    if not 0 <= config.corrupt_share < 1:
        raise ValueError(f"corrupt_share must lie in [0, 1), got {config.corrupt_share}.")
    if not 0 <= config.rescored_fraction <= 1:
        raise ValueError(f"rescored_fraction must lie in [0, 1], got {config.rescored_fraction}.")
    if not 0 <= config.activity_share <= 1 or not -1 <= config.activity_tie <= 1:
        raise ValueError(
            f"activity_share must lie in [0, 1] and activity_tie in [-1, 1]; got {config.activity_share},"
            f" {config.activity_tie}."
        )
