"""What the commands print: each result as text, by pure functions, so the CLI and the demo say the same."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from erosion.core.domain import ALL_JOINTS
from erosion.core.split import SPLITS
from erosion.model.network import ModelConfig
from erosion.train import training

if TYPE_CHECKING:
    from erosion.io.runs import RunManifest
    from erosion.registry.summary import Summary
    from erosion.registry.validate import Report
    from erosion.report.embedding import EmbedResult
    from erosion.report.queue import ReviewResult
    from erosion.report.report import ReportResult
    from erosion.score.scoring import ScoreResult
    from erosion.train.training import TrainResult
    from erosion.workflows.nightly import NightlyResult

SHOWN_PROBLEMS = 50  # validation problems listed; the rest are counted


def synthesized(manifest: RunManifest, out: str) -> str:
    """Joints, ratings, time; the registry rater's target stage mix and the true mix drawn for it."""
    rows = manifest.rows
    shares = {
        name: " / ".join(f"{100 * m:.1f}" for m in manifest.config[key])
        for name, key in (("rated", "class_mix"), ("true", "truth_mix"))
    }
    return (
        f"wrote {rows['registry']} joints, {rows['ratings']} ratings to {out} "
        f"in {manifest.seconds['total']} s ({rows['registry'] / max(manifest.seconds['total'], 1e-3):.1f} joints/s)\n"
        f"    stage mix: registry rater's target {shares['rated']} %, the truth's {shares['true']} %"
        + (
            f"\n    {rows['corrupted']} registry ratings corrupted, listed in {out}/corrupted"
            if "corrupted" in rows
            else ""
        )
        + (f"\n    {rows['activity']} disease-activity assessments in {out}/activity" if "activity" in rows else "")
    )


def ingested(manifest: RunManifest, out: str) -> str:
    """The ingest's counts, and where the rejected rows went."""
    rows = manifest.rows
    text = f"ingested {rows['registry']} joints and {rows['ratings']} ratings into {out}"
    if rows["errors"]:
        text += f"\n{rows['errors']} rows rejected: see {out.rstrip('/')}/ingest_errors/"
    if "activity" in rows:
        text += f"\ningested {rows['activity']} disease-activity assessments into {out.rstrip('/')}/activity/"
        if rows["activity_errors"]:
            text += f"\n{rows['activity_errors']} activity rows rejected: see {out.rstrip('/')}/activity_errors/"
    return text


def validation(reports: Sequence[Report]) -> str:
    """The first problems, one a line, then each table's counts."""
    problems = [p for r in reports for p in r.problems]
    lines = []
    for p in problems[:SHOWN_PROBLEMS]:
        where = f"{p.file} row {p.row}" if p.row is not None else p.file
        lines.append(f"{p.table}: {where} [{p.key}] {p.column}: {p.reason}")
    if len(problems) > SHOWN_PROBLEMS:
        lines.append(f"... and {len(problems) - SHOWN_PROBLEMS} more")
    for name, r in zip(("registry", "ratings"), reports, strict=False):
        lines.append(f"{name}: {r.rows} rows, {r.bad_rows} with problems")
    return "\n".join(lines)


def summary(s: Summary) -> str:
    """A registry's size, class mix and patient splits."""
    lines = [
        f"    joints {s.joints}, patients {s.patients}, visits {s.visits}",
        "    class mix (registry rater): " + " / ".join(f"{100 * m:.1f}" for m in s.class_mix) + " %",
    ]
    lines += [f"    {name:5s} {s.split_patients[name]:5d} patients {s.split_joints[name]:7d} joints" for name in SPLITS]
    return "\n".join(lines)


def trained(result: TrainResult) -> str:
    """Each epoch's line, then the trained model, its best epoch and its validation accuracies; for a cross-fitted
    run each fold model's, then the fold set."""
    if result.folds:
        parts = [f"fold {k}:\n" + trained(member) for k, member in enumerate(result.folds)]
        return (
            "\n".join(parts) + f"\nfold set of {len(result.folds)} models {result.card.model_version} in {result.model}"
        )
    card, best = result.card, result.best
    if card.model.arch != "cnn":
        model = f"{card.model.arch} ({card.model.input_size} px, {'pretrained' if card.pretrained else 'random start'})"
    else:
        model = "the paper's model" if card.model == ModelConfig() else f"a reduced model ({card.model})"
    epochs = [training.progress(metrics, card.train["epochs"]) for metrics in card.history]
    return "\n".join(epochs) + (
        f"\ntrained {model}, {len(card.history)} epochs; best epoch {card.epoch + 1} by validation balanced accuracy:\n"
        f"    accuracy {best['val_accuracy']:.3f}, balanced {best['val_balanced_accuracy']:.3f}, "
        f"+-1 balanced {best['val_pm1_balanced_accuracy']:.3f} on {best['val_rows']} validation crops\n"
        f"    model {card.model_version} in {result.model}"
    )


def evaluation(split: str, crops: int, accuracies: dict[str, dict]) -> str:
    """A model's accuracies on a split against each reference, each with its 95 % interval."""
    lines = [f"{split} split, {crops} crops scored"]
    for name, a in accuracies.items():
        pct = f", % MAE {a['pct_mae']:.1f}" if not math.isnan(a["pct_mae"]) else ""
        shown = ", ".join(f"{label} {_interval(a, key)}" for key, label in _EVALUATED)
        lines.append(f"    vs {name}: n {a['n']}, {shown}{pct}")
    return "\n".join(lines)


_EVALUATED = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced"),
    ("pm1_balanced_accuracy", "+-1 balanced"),
    ("kappa", "quadratic kappa"),
)


def _interval(values: dict, key: str) -> str:
    """A statistic and its 95 % interval, e.g. ``0.777 [0.741, 0.809]``."""
    return f"{values[key]:.3f} [{values[key + '_low']:.3f}, {values[key + '_high']:.3f}]"


def scoring(result: ScoreResult) -> str:
    """The run's counts, its failures by reason with examples, and where it was committed."""
    lines = [
        f"scored {result.scored} of {result.rows} crops with model {result.model_version}, {result.failed} failed, "
        f"in {result.seconds:.1f} s ({result.crops_per_s:.0f} crops/s end to end)"
    ]
    lines += [f"    {count} {reason}" for reason, count in sorted(result.errors.items(), key=lambda item: -item[1])]
    lines += [f"    e.g. {joint_id}: {error}" for joint_id, error in result.examples[:10]]
    if result.manifest and "embedded" in result.manifest.rows:
        lines.append(f"    {result.manifest.rows['embedded']} embeddings (the crops scored, not carried over)")
    lines.append(f"    Rau scores of {result.visits} visits; run {result.run_id} committed to {result.run}")
    return "\n".join(lines)


def embedded(result: EmbedResult) -> str:
    """How many crops were mapped (or placed), how many are rated, their neighbours' disagreement, where it went."""
    rated = result.neighbours["disagreement"].dropna()
    how = "placed into the earlier map (openTSNE)" if result.placed else "mapped with t-SNE"
    lines = [f"{len(result.coordinates)} crops of space {result.space} {how}, {len(rated)} of them rated"]
    if len(rated):
        lines.append(
            f"    rated neighbours' mean |stage - rating|: median {rated.median():.2f}, "
            f"{int((rated >= 1).sum())} ratings at 1 stage or more"
        )
    lines.append(f"    map: {result.out}/map.png; coordinates.parquet, neighbours.parquet beside it")
    return "\n".join(lines)


def report(result: ReportResult, icc_form: str = "ICC2") -> str:
    """Each rater's agreement with each other on all joints, the ICC, and where the page is."""
    t = result.tables
    if t.agreement.empty:
        return f"nothing to compare: no joint of the run was rated by a human rater\n    report: {result.html}"
    lines = [f"agreement of {len(result.raters)} raters ({', '.join(result.raters)}):"]
    for row in t.agreement[t.agreement["subset"] == ALL_JOINTS].itertuples():
        lines.append(
            f"    {row.rater} vs {row.reference}: n {row.n}, balanced accuracy {row.balanced_accuracy:.3f}, "
            f"+-1 balanced {row.pm1_balanced_accuracy:.3f}, quadratic kappa {row.kappa:.3f} "
            f"({row.kappa_low:.3f}-{row.kappa_high:.3f})"
        )
    icc = t.icc[(t.icc["subset"] == ALL_JOINTS) & (t.icc["form"] == icc_form)].iloc[0]
    if icc["note"]:
        lines.append(f"    {icc_form}: {icc['note']}")
    else:
        lines.append(
            f"    {icc_form} over all raters on {icc['n']} joints: {icc['value']:.3f} "
            f"({icc['low']:.3f}-{icc['high']:.3f}), {icc['label']}"
        )
    if result.activity is not None:
        for row in result.activity.summary.itertuples():
            lines.append(
                f"    {row.relation} vs {row.score}: Spearman rho {row.rho:.3f} ({row.low:.3f}-{row.high:.3f}, "
                f"clustered by patient), n {row.n} of {row.patients} patients, {row.without_das28} without a DAS28"
            )
    lines.append(f"    report: {result.html}")
    return "\n".join(lines)


def reviewed(result: ReviewResult) -> str:
    """The queue's size and flags, what was resolved, the measurement against corrupted ratings, the page."""
    flagged = int(result.queue["flagged"].sum()) if len(result.queue) else 0
    lines = [f"queued {len(result.queue)} ratings ({flagged} flagged by confident learning)"]
    if len(result.resolved):
        counts = result.resolved["outcome"].value_counts()
        lines.append(f"    resolved so far: {counts.get('kept', 0)} kept, {counts.get('changed', 0)} changed")
    for row in result.evaluation.itertuples() if result.evaluation is not None else ():
        lines.append(
            f"    {row.queue}: precision {row.precision:.3f}, recall {row.recall:.3f}"
            f" ({row.corrupted_in_queue} of {row.places} corrupted; {row.corrupted_candidates} among the candidates)"
        )
    lines.append(f"    queue: {result.html}")
    return "\n".join(lines)


def nightly(result: NightlyResult) -> str:
    """The night's run: scored, carried over, failed, and its report; or that it was done already."""
    m = result.manifest
    if not result.ran:
        return (
            f"run {m.run_id} is committed already, with model {m.model_version[:12]} and these inputs\n"
            f"    nothing to do: {result.run}\n{alerts(m)}"
        )
    return (
        f"night {m.run_id}: {m.rows['total']} rows, {_by_model(m)} scored by model {m.model_version[:12]}, "
        f"{m.rows['carried']} carried over from {m.carried_from or 'no earlier run'}, {m.rows['failed']} failed; "
        f"{m.rows['visits']} visits; {m.seconds['total']:.1f} s\n{report(result.report)}\n{alerts(m)}\n"
        f"    committed to {result.run}"
    )


SHOWN_ALERTS = 12


def alerts(m: RunManifest) -> str:
    """A night's monitoring alerts, one a line, or that there were none (and against what)."""
    if not m.monitored_against:
        return "    monitoring: no earlier night to compare with"
    against = f"{len(m.monitored_against)} reference night(s) ({', '.join(m.monitored_against)})"
    if not m.alerts:
        return f"    monitoring: no alert against {against}"
    shown = [f"      ALERT {a['message']}" for a in m.alerts[:SHOWN_ALERTS]]
    more = [f"      ... and {len(m.alerts) - SHOWN_ALERTS} more (the manifest's alerts, drift/)"] * (
        len(m.alerts) > SHOWN_ALERTS
    )
    return "\n".join([f"    monitoring: {len(m.alerts)} alert(s) against {against}:", *shown, *more])


def runs(found: Sequence[RunManifest], out: str) -> str:
    """A table of committed runs, one a line."""
    lines = [_RUNS_ROW.format("run", "kind", "committed", "model", "rows", "scored", "carried", "failed")]
    for m in found:
        counts = [m.rows.get("total", 0), _by_model(m), m.rows.get("carried", 0), m.rows.get("failed", 0)]
        lines.append(_RUNS_ROW.format(m.run_id, m.kind, m.committed_at, m.model_version[:12], *counts))
    lines.append(f"{len(found)} committed runs in {out}")
    return "\n".join(lines)


_RUNS_ROW = "{:22s} {:8s} {:25s} {:12s} {:>9} {:>9} {:>9} {:>6}"


def _by_model(m: RunManifest) -> int:
    """The rows the model scored in this run: neither failed nor carried over."""
    return m.rows.get("scored", 0) - m.rows.get("carried", 0)


def figures(values: dict, indent: str = "") -> str:
    """A benchmark's figures, nested dictionaries indented."""
    lines = []
    for key, value in values.items():
        if isinstance(value, dict) and key != "setting":
            lines += [f"{indent}{key}:", figures(value, indent + "    ")]
        else:
            lines.append(f"{indent}{key}: {value:.3f}" if isinstance(value, float) else f"{indent}{key}: {value}")
    return "\n".join(lines)
