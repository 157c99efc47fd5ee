"""The agreement report's tables, pure functions of the joined stages (a row per joint, a column per rater).

Every pair of raters is compared on each subset of joints (all; each body part, where there are several; each
joint type; each joint) with the
statistics of :mod:`erosion.core.agreement`, and one ICC is computed over all raters on the joints they all
rated. Rows that cannot take part (a score with an error, a rating with no valid stage, a duplicate, a rating
of a joint the run did not score) are left out and counted in the accounting table.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from erosion.core import agreement
from erosion.core.domain import ALL_JOINTS, BODY_PARTS, joint_type
from erosion.core.split import split_of


@dataclass(frozen=True)
class Tables:
    """The report's tables, each written as ``<name>.parquet``."""

    accounting: pd.DataFrame  # source, outcome, rows: where every input row went
    agreement: pd.DataFrame  # per subset and pair of raters: n and every statistic with its interval
    confusion: pd.DataFrame  # per subset and pair: the confusion matrix in long form
    icc: pd.DataFrame  # per subset and ICC form: the ICC over all raters on the joints they all rated
    venn: pd.DataFrame  # three raters: joints on which all, one pair or none of them agree


LABELS = ("joint", "body_part")
"""The joined stages' columns that are not raters."""


def model_rater(model_version: str) -> str:
    """The model's name as a rater: its version, shortened (the page gives it whole)."""
    return f"model {model_version[:12]}"


def seen_in_training(scores: pd.DataFrame) -> pd.Series:
    """Which score rows the model saw in training (``in_sample`` true); a null flag, or scores without the column
    (runs from before it), count as unseen."""
    if "in_sample" not in scores.columns:
        return pd.Series(False, index=scores.index)
    return scores["in_sample"].fillna(False).astype(bool)


def join_stages(
    scores: pd.DataFrame,
    ratings: pd.DataFrame,
    rater: str,
    split: str = "all",
    split_seed: int = 0,
    in_sample: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stages of every reportable joint by rater, and the accounting of every input row.

    ``scores`` has joint_id, patient_id, joint, ratingen_pred and error; ``ratings`` joint_id, rater and
    ratingen (and ``in_sample``, where the scores have it: those joints are left out unless ``in_sample``).
    The result is indexed by joint_id with the ``LABELS`` columns (``body_part`` where the scores have it) and
    one float column per rater
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
    if not in_sample:
        seen = seen_in_training(scored)
        accounting.append(("scores", "left out, in-sample: the model saw the patient in training", int(seen.sum())))
        scored = scored[~seen]
    if split != "all":
        inside = scored["patient_id"].map(lambda p: split_of(p, split_seed) == split).astype(bool)
        accounting.append(("scores", f"left out, patient outside the {split} split", int((~inside).sum())))
        scored = scored[inside]
    accounting.insert(0, ("scores", "used", len(scored)))

    labels = [c for c in LABELS if c in scored.columns]
    stages = scored.set_index("joint_id")[labels].assign(**{rater: scored["ratingen_pred"].to_numpy(float)})
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


def subsets(stages: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(name, mask) of every subset of the joined stages: all joints, each body part present where there are
    several (hand_left, foot_right, ...), each joint type present (MCP, PIP, ...), each joint present."""
    names = stages["joint"].to_numpy(dtype=object)
    kinds = np.array([joint_type(j) for j in names], dtype=object)
    found = [(ALL_JOINTS, np.ones(len(names), bool))]
    parts = stages["body_part"].to_numpy(dtype=object) if "body_part" in stages.columns else np.zeros(0)
    if len(set(parts)) > 1:
        found += [(part, parts == part) for part in BODY_PARTS if part in set(parts)]
    found += [(kind, kinds == kind) for kind in sorted(set(kinds))]
    found += [(joint, names == joint) for joint in sorted(set(names))]
    return found


def pair_tables(stages: pd.DataFrame, raters: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agreement statistics and long-form confusion matrices of every pair on every subset.

    In a pair the earlier rater of ``raters`` is the reference (rows of the confusion matrix; the classes
    of the balanced accuracies), so a human is always the model's reference.
    """
    rows, cells = [], []
    for subset, mask in subsets(stages):
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
    for subset, mask in subsets(stages):
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


def build_tables(stages: pd.DataFrame, accounting: pd.DataFrame, raters: list[str], venn: tuple[str, ...]) -> Tables:
    """All of the report's tables from the joined stages."""
    pairs, confusion = pair_tables(stages, raters)
    return Tables(
        accounting=accounting,
        agreement=pairs,
        confusion=confusion,
        icc=icc_table(stages, raters),
        venn=venn_table(stages, venn) if venn else pd.DataFrame(),
    )
