"""Disease activity (DAS28) beside erosion: the formulas, their inputs' ranges, the join to visits, the statistics.

The DAS28 formulas are the validated ones that the DAS site of the Radboud University Nijmegen lists
(https://das-score.nl/en/das-and-das28/how-to-meaure-the-das28/how-to-calculate-the-das28/alternative-validated-formulae;
Prevoo et al. 1995 for the ESR forms; the CRP forms as the same page gives them):

* DAS28-ESR, 4 variables: 0.56 sqrt(TJC28) + 0.28 sqrt(SJC28) + 0.70 ln(ESR) + 0.014 GH
* DAS28-ESR, 3 variables: (0.56 sqrt(TJC28) + 0.28 sqrt(SJC28) + 0.70 ln(ESR)) * 1.08 + 0.16
* DAS28-CRP, 4 variables: 0.56 sqrt(TJC28) + 0.28 sqrt(SJC28) + 0.36 ln(CRP + 1) + 0.014 GH + 0.96
* DAS28-CRP, 3 variables: (0.56 sqrt(TJC28) + 0.28 sqrt(SJC28) + 0.36 ln(CRP + 1)) * 1.10 + 1.15

TJC28 / SJC28: tender / swollen joints of 28; ESR in mm/h; CRP in mg/L; GH the patient's global assessment on a
100 mm visual analogue scale. The 3-variable forms are used where GH is missing. Bands (the same page): remission
< 2.6, low < 3.2, moderate up to 5.1, high > 5.1 (the thesis writes > 5.2; the site, and EULAR, 5.1).

A visit (patient, visit date) takes the DAS28 of the patient's assessment nearest in time within a window, each
score (ESR, CRP) on its own; of two equally near, the earlier (the assessment before the radiograph). Rau and
DAS28 are related by Spearman's rho with a percentile interval from a bootstrap that resamples patients, not
visits: a patient's visits are not independent of one another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

COMPONENTS = ("tender_28", "swollen_28", "esr", "crp", "global_health")
"""The DAS28's inputs: tender and swollen joints of 28, ESR (mm/h), CRP (mg/L), patient global (0-100 mm)."""

SCORES = ("das28_esr", "das28_crp")
"""The two DAS28 scores, each stored as exported or computed from the components."""

FORMULAS = ("stored", "4 variables", "3 variables")
"""Where a score came from: the export's own value, or the 4- or 3-variable formula (without GH)."""

BANDS = (("remission", 0.0, 2.6), ("low", 2.6, 3.2), ("moderate", 3.2, 5.1), ("high", 5.1, math.inf))
"""The activity bands and their limits: remission < 2.6 <= low < 3.2 <= moderate <= 5.1 < high."""

SCHEMA = pa.schema(
    [
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),  # of the assessment
        pa.field("tender_28", pa.int8()),  # tender joints of 28; null where not given
        pa.field("swollen_28", pa.int8()),  # swollen joints of 28
        pa.field("esr", pa.float32()),  # erythrocyte sedimentation rate, mm/h
        pa.field("crp", pa.float32()),  # C-reactive protein, mg/L
        pa.field("global_health", pa.float32()),  # patient global, 0-100 mm VAS
        pa.field("das28_esr", pa.float32()),  # null where neither stored nor computable
        pa.field("das28_crp", pa.float32()),
        pa.field("das28_esr_formula", pa.string()),  # one of FORMULAS; null with the score
        pa.field("das28_crp_formula", pa.string()),
    ]
)
"""The activity contract: one row per (patient, assessment date)."""

_RANGES = {
    "tender_28": "an integer 0-28",
    "swollen_28": "an integer 0-28",
    "esr": "> 0 mm/h",
    "crp": ">= 0 mg/L",
    "global_health": "0-100 mm",
    "das28_esr": "0-10",
    "das28_crp": "0-10",
}


def das28_esr(tender: np.ndarray, swollen: np.ndarray, esr: np.ndarray, global_health: np.ndarray) -> np.ndarray:
    """DAS28-ESR: the 4-variable formula, the 3-variable one where GH is NaN; NaN where another input is."""
    core = 0.56 * np.sqrt(tender) + 0.28 * np.sqrt(swollen) + 0.70 * np.log(esr)
    return np.where(np.isnan(global_health), core * 1.08 + 0.16, core + 0.014 * np.asarray(global_health))


def das28_crp(tender: np.ndarray, swollen: np.ndarray, crp: np.ndarray, global_health: np.ndarray) -> np.ndarray:
    """DAS28-CRP: the 4-variable formula, the 3-variable one where GH is NaN; NaN where another input is."""
    core = 0.56 * np.sqrt(tender) + 0.28 * np.sqrt(swollen) + 0.36 * np.log1p(crp)
    return np.where(np.isnan(global_health), core * 1.10 + 1.15, core + 0.014 * np.asarray(global_health) + 0.96)


def value_problem(name: str, value: float) -> str | None:
    """Why ``value`` is out of the range of the component or score ``name``, or None where it is fine."""
    if name not in _RANGES:
        raise ValueError(f"name must be one of {', '.join(_RANGES)}; got {name!r}.")
    if name in ("tender_28", "swollen_28"):
        fine = value == int(value) and 0 <= value <= 28
    elif name == "esr":
        fine = value > 0
    elif name == "crp":
        fine = value >= 0
    elif name == "global_health":
        fine = 0 <= value <= 100
    else:
        fine = 0 <= value <= 10
    return None if fine else f"{name} {value:g} is not {_RANGES[name]}"


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with both scores and their formulas: a stored score is kept, a missing one computed from the
    components where they allow (tender, swollen and the marker; GH optional), else left null.

    ``frame`` has the columns of ``COMPONENTS`` and ``SCORES`` as floats (NaN: not given); other columns pass.
    """
    frame = frame.copy()
    gh = frame["global_health"].to_numpy(float)
    formula = np.where(np.isnan(gh), FORMULAS[2], FORMULAS[1])
    for score, marker, computed in (("das28_esr", "esr", das28_esr), ("das28_crp", "crp", das28_crp)):
        stored = frame[score].to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = computed(*(frame[c].to_numpy(float) for c in ("tender_28", "swollen_28", marker)), gh)
        frame[score] = np.where(np.isnan(stored), value, stored)
        names = np.where(np.isnan(stored), np.where(np.isnan(value), None, formula), FORMULAS[0])
        frame[f"{score}_formula"] = pd.Series(names, index=frame.index, dtype=object)
    return frame


def band(value: float) -> str:
    """The activity band of a DAS28 value (``BANDS``)."""
    if np.isnan(value):
        raise ValueError("a DAS28 value must be a number, got NaN.")
    if value < 2.6:
        return "remission"
    return "low" if value < 3.2 else "moderate" if value <= 5.1 else "high"


def nearest(visits: pd.DataFrame, activity: pd.DataFrame, score: str, window_days: int = 90) -> pd.DataFrame:
    """Each visit's nearest assessment with ``score`` within ``window_days`` of its date (ties: the earlier).

    ``visits`` has patient_id and visit_date, ``activity`` patient_id, date and ``score`` (dates as
    ``datetime.date``). Returns the visits, in their order, with ``score`` (NaN where none lies in the window) and
    ``<score>_days``, the assessment's date minus the visit's in days.
    """
    if window_days < 0:
        raise ValueError(f"window_days must be >= 0, got {window_days}.")
    left = visits[["patient_id", "visit_date"]].reset_index(drop=True).rename_axis("visit").reset_index()
    right = activity.loc[activity[score].notna(), ["patient_id", "date", score]]
    pairs = left.merge(right, on="patient_id")
    pairs["days"] = [(a - v).days for a, v in zip(pairs["date"], pairs["visit_date"], strict=True)]
    pairs = pairs[pairs["days"].abs() <= window_days]
    pairs = pairs.assign(distance=pairs["days"].abs()).sort_values(["visit", "distance", "days", score])
    chosen = pairs.drop_duplicates("visit").set_index("visit")
    out = left.drop(columns="visit")
    out[score] = chosen[score].reindex(left["visit"]).to_numpy(float)
    out[f"{score}_days"] = chosen["days"].reindex(left["visit"]).to_numpy(float)
    return out


def changes(visits: pd.DataFrame, value: str, scores: tuple[str, ...]) -> pd.DataFrame:
    """Consecutive visits of each patient: ``value``'s change, per year, and each score's mean over the two visits.

    ``visits`` has patient_id, visit_date, ``value`` and ``scores``. The mean of the two visits' DAS28 stands for the
    activity over the interval (NaN unless both have one); the change per year lets intervals of 6 months and of 2
    years be compared.
    """
    ordered = visits.sort_values(["patient_id", "visit_date"])
    later = ordered.groupby("patient_id").shift(-1)
    keep = later["visit_date"].notna()
    first, second = ordered[keep], later[keep]
    years = np.array([(b - a).days / 365.25 for a, b in zip(first["visit_date"], second["visit_date"], strict=True)])
    out = pd.DataFrame(
        {
            "patient_id": first["patient_id"].to_numpy(),
            "from_date": first["visit_date"].to_numpy(),
            "to_date": second["visit_date"].to_numpy(),
            "years": years,
            f"{value}_change": second[value].to_numpy(float) - first[value].to_numpy(float),
        }
    )
    out[f"{value}_change_per_year"] = out[f"{value}_change"] / out["years"]
    for score in scores:
        out[score] = (first[score].to_numpy(float) + second[score].to_numpy(float)) / 2
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties at their mean rank); NaN where a side is constant
    or there are fewer than 3 pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of one length; got shapes {x.shape} and {y.shape}.")
    if len(x) < 3:
        return math.nan
    rx, ry = stats.rankdata(x) - (len(x) + 1) / 2, stats.rankdata(y) - (len(y) + 1) / 2
    scale = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / scale) if scale > 0 else math.nan


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho with its patient-clustered bootstrap interval."""

    n: int  # pairs
    patients: int
    rho: float
    low: float
    high: float
    draws: int  # bootstrap draws with a defined rho (a draw of one patient's constant values has none)


def clustered_spearman(
    x: np.ndarray,
    y: np.ndarray,
    clusters: np.ndarray,
    draws: int = 2_000,
    seed: int = 0,
    level: float = 0.95,
) -> Correlation:
    """Spearman's rho of (x, y) and a percentile interval from ``draws`` bootstrap samples of whole clusters
    (patients), drawn with replacement; pairs with a NaN are left out first. Seeded: the same data give the same
    interval."""
    x, y, clusters = np.asarray(x, float), np.asarray(y, float), np.asarray(clusters)
    if not (x.shape == y.shape == clusters.shape) or x.ndim != 1:
        raise ValueError(f"x, y and clusters must be 1-D of one length; got {x.shape}, {y.shape}, {clusters.shape}.")
    if draws < 1 or not 0 < level < 1:
        raise ValueError(f"draws must be >= 1 and level in (0, 1); got {draws} and {level}.")
    usable = ~(np.isnan(x) | np.isnan(y))
    x, y, clusters = x[usable], y[usable], clusters[usable]
    _, cluster = np.unique(clusters, return_inverse=True)
    k = int(cluster.max()) + 1 if len(cluster) else 0
    rho = spearman(x, y)
    if k < 2 or math.isnan(rho):
        return Correlation(len(x), k, rho, math.nan, math.nan, 0)
    order = np.argsort(cluster, kind="stable")
    starts = np.searchsorted(cluster[order], np.arange(k + 1))
    members = [order[starts[c] : starts[c + 1]] for c in range(k)]
    rng = np.random.default_rng(seed)
    sample = np.empty(draws)
    for d in range(draws):
        rows = np.concatenate([members[c] for c in rng.integers(0, k, k)])
        sample[d] = spearman(x[rows], y[rows])
    defined = sample[~np.isnan(sample)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(defined, [tail, 100 - tail]) if len(defined) else (math.nan, math.nan)
    return Correlation(len(x), k, rho, float(low), float(high), len(defined))


@dataclass(frozen=True)
class Relation:
    """Rau beside DAS28: per visit, per interval between consecutive visits, and the correlations."""

    visits: pd.DataFrame  # patient_id, visit_date, rau, and per score its value and <score>_days
    intervals: pd.DataFrame  # patient_id, from_date, to_date, years, rau_change(_per_year), each score's mean
    summary: pd.DataFrame  # per relation and score: n, patients, without_das28, rho, low, high, draws


RELATIONS = ("Rau at the visit", "Rau change per year")
"""The summary's relations: a visit's Rau and its DAS28; consecutive visits' Rau change per year and their mean
DAS28."""


def relate(
    rau: pd.DataFrame,
    activity: pd.DataFrame,
    window_days: int = 90,
    draws: int = 2_000,
    seed: int = 0,
) -> Relation:
    """Join each visit's Rau (``rau``: patient_id, visit_date, rau) to its nearest DAS28 of each kind and correlate,
    per visit and per interval between a patient's consecutive visits, with patient-clustered intervals.

    A score that no assessment has (a registry with CRP only, say) is left out of the summary.
    """
    visits = rau.loc[rau["rau"].notna(), ["patient_id", "visit_date", "rau"]].reset_index(drop=True)
    scores = tuple(s for s in SCORES if s in activity.columns and activity[s].notna().any())
    for score in scores:
        joined = nearest(visits, activity, score, window_days)
        visits[[score, f"{score}_days"]] = joined[[score, f"{score}_days"]].to_numpy()
    intervals = changes(visits, "rau", scores)
    rows = []
    for relation, frame, value in (
        (RELATIONS[0], visits, "rau"),
        (RELATIONS[1], intervals, "rau_change_per_year"),
    ):
        for score in scores:
            result = clustered_spearman(frame[value], frame[score], frame["patient_id"], draws, seed)
            without = int(frame[score].isna().sum())
            rows.append({"relation": relation, "score": score, "without_das28": without} | vars(result))
    columns = ["relation", "score", "n", "patients", "without_das28", "rho", "low", "high", "draws"]
    return Relation(visits, intervals, pd.DataFrame(rows, columns=columns))


def to_table(frame: pd.DataFrame) -> pa.Table:
    """A completed frame (:func:`complete`, with patient_id and date) as the activity contract (``SCHEMA``)."""
    counts = frame.astype({"tender_28": "Int8", "swollen_28": "Int8"})
    return pa.Table.from_pandas(counts[SCHEMA.names], SCHEMA, preserve_index=False)
