"""The report's one-page HTML: tables with intervals and the plots embedded, for readers who do not read code."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from erosion.core import agreement
from erosion.core.domain import ALL_JOINTS
from erosion.report import figures

if TYPE_CHECKING:
    from erosion.core.activity import Relation
    from erosion.io.runs import RunManifest
    from erosion.report.cam import Explanation
    from erosion.report.tables import Tables

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td { font-variant-numeric: tabular-nums; }
.small { font-size: 0.85em; color: #555; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; } figure { margin: 1em 0; } img { max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
ul.alert li { color: #a00; font-weight: 600; }
"""


@dataclass(frozen=True)
class Context:
    """What the page says about the run besides its tables."""

    run: RunManifest  # the scoring run's manifest
    model: str  # the model's name as a rater
    split: str
    split_seed: int
    icc_form: str
    made: str  # when the report was made, ISO 8601 UTC
    calibration: dict | None = None  # the model card's, where the model has one
    in_sample: bool = False  # whether in-sample scores were compared too


def render(
    tables: Tables,
    raters: list[str],
    plots: dict[str, bytes],
    context: Context,
    explained: Sequence[Explanation] = (),
    estimated: pd.DataFrame | None = None,
    activity: Relation | None = None,
    window_days: int = 90,
    left_out: int = 0,
) -> str:
    """The whole page as one HTML document (plots inline as PNG data, so the file stands alone).

    ``explained``: the joints with Grad-CAM heat maps (:func:`erosion.report.report.explain`),
    in a section of their own; ``estimated``: the expected agreement on joints nobody rated
    (:func:`erosion.report.report.estimated_agreement`); ``activity``: Rau against DAS28, each visit joined to
    the nearest assessment within ``window_days`` (:func:`erosion.report.report.relate_activity`), without the
    visits of ``left_out`` in-sample patients.
    """
    pairs = tables.agreement
    overall = pairs[pairs["subset"] == ALL_JOINTS]
    joints = "every joint of the run" if context.split == "all" else f"the {context.split} split's patients"
    humans = [r for r in raters if r != context.model]
    parts = [
        f"<h1>Bone erosion scoring: agreement of the model with {len(humans)} human rater(s)</h1>",
        "<p>This page compares the stages (Ratingen 0-5) the model gave each finger joint with the stages given by"
        " human raters, pair by pair, as Rohrbach et al. (2019) did: the model is treated as one more rater. A"
        " human rater is always the reference of a pair with the model.</p>",
        _facts(context, joints, humans),
        alerts_section(context.run),
        _accounting(tables),
        table("Table 2. Agreement of each pair of raters on all joints (agreement.parquet)", _pair_summary(overall)),
        table(
            f"Table 3. Intraclass correlation of {', '.join(raters)} on the joints all of them rated:"
            f" {agreement.ICC_FORMS[context.icc_form]} ({context.icc_form}; icc.parquet)",
            _icc_summary(tables.icc, context.icc_form),
        ),
        table(
            "Table 4. Quadratic weighted kappa by joint type and joint (agreement.parquet)",
            _by_subset(pairs, "kappa", "{:.3f}"),
            escape=False,
        ),
        table(
            "Table 5. Balanced accuracy by joint type and joint (agreement.parquet)",
            _by_subset(pairs, "balanced_accuracy", "{:.1%}"),
            escape=False,
        ),
        _venn_section(tables.venn, plots),
        "<h2>Confusion matrices (confusion.parquet)</h2>",
    ]
    for row in overall.itertuples():
        name = figures.file_name(row.reference, row.rater)
        if name in plots:
            parts.append(figure(plots[name], f"{row.rater} against {row.reference}, all joints (n = {row.n:,})."))
    parts += [
        _calibration_section(context.calibration, plots),
        _estimated_section(estimated),
        _activity_section(activity, plots, window_days, left_out),
        _cam_section(explained, context.model, humans),
        _embedding_section(plots),
        _reading(),
        _notes(pairs),
    ]
    return document(f"Erosion agreement report, run {context.run.run_id}", parts)


def nothing_to_compare(tables: Tables, context: Context) -> str:
    """The page of a run with no joint that both the model and a human rater scored (an empty registry, say)."""
    parts = [
        "<h1>Bone erosion scoring: nothing to compare</h1>",
        "<p>No joint of this run was both scored by the model and rated by a human rater, so there is no"
        " agreement to report. Table 1 says where every input row went.</p>",
        _facts(context, "none", []),
        alerts_section(context.run),
        _accounting(tables),
    ]
    return document(f"Erosion agreement report, run {context.run.run_id}", parts)


def alerts_section(run: RunManifest) -> str:
    """A nightly run's monitoring alerts (``erosion.report.monitoring``), or that it raised none; nothing for a
    run that was not monitored."""
    if run.kind not in ("score", "nightly") or not run.monitored_against:
        return ""
    against = ", ".join(html.escape(r) for r in run.monitored_against)
    if not run.alerts:
        return f"<h2>Monitoring</h2><p>No alert against the reference nights {against} (drift/).</p>"
    items = "".join(f"<li>{html.escape(a['message'])}</li>" for a in run.alerts)
    return (
        f"<h2>Monitoring: {len(run.alerts)} alert(s)</h2><p>Against the reference nights {against} (drift/):</p>"
        f'<ul class="alert">{items}</ul>'
    )


def _accounting(tables: Tables) -> str:
    frame = pd.DataFrame(
        {
            "Source": tables.accounting["source"],
            "Outcome": tables.accounting["outcome"],
            "Rows": tables.accounting["rows"].map("{:,}".format),
        }
    )
    return table("Table 1. Where every input row went (accounting.parquet)", frame)


def document(title: str, parts: list[str]) -> str:
    """A whole page: the title, the shared style and the parts (HTML) in order."""
    title = html.escape(title)
    body = "\n".join(p for p in parts if p)
    return f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>' + (
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def interval(value: float, low: float, high: float, form: str = "{:.3f}") -> str:
    """'value (low-high)', or an em dash where the statistic is undefined."""
    if value is None or np.isnan(value):
        return "\u2014"
    return f"{form.format(value)} ({form.format(low)}\u2013{form.format(high)})"


def _facts(context: Context, joints: str, humans: list[str]) -> str:
    run = context.run
    facts = {
        "Scoring run": run.run_id,
        "Model version": f"{run.model_version} (shown as \u201c{context.model}\u201d)",
        "Scored at": run.committed_at,
        "Report made": context.made,
        "Registry rows in the run": f"{run.rows.get('total', 0):,} ({run.rows.get('scored', 0):,} scored, "
        f"{run.rows.get('failed', 0):,} could not be scored)",
        "Joints compared": joints + ("" if context.split == "all" else f" (split seed {context.split_seed})"),
        "Human raters": ", ".join(humans) or "none",
        "In-sample scores": "compared too (--in-sample): they flatter the model"
        if context.in_sample
        else "left out: joints of patients the model saw in training (see the accounting)",
    }
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items())
    return f"<dl>{items}</dl>"


def _pair_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Reference": pairs["reference"],
            "Rater": pairs["rater"],
            "Joints": pairs["n"].map("{:,}".format),
            "Global accuracy": _column(pairs, "accuracy", "{:.1%}"),
            "Balanced accuracy": _column(pairs, "balanced_accuracy", "{:.1%}"),
            "\u00b11 balanced accuracy": _column(pairs, "pm1_balanced_accuracy", "{:.1%}"),
            "Quadratic kappa": _column(pairs, "kappa", "{:.3f}"),
            "Agreement (Cicchetti)": pairs["kappa"].map(lambda v: "\u2014" if np.isnan(v) else agreement.cicchetti(v)),
        }
    )


def _icc_summary(icc: pd.DataFrame, form: str) -> pd.DataFrame:
    chosen = icc[icc["form"] == form]
    return pd.DataFrame(
        {
            "Joints": chosen["subset"],
            "Joints rated by all": chosen["n"].map("{:,}".format),
            "ICC (95 % CI)": _column(chosen, "value", "{:.3f}", low="low", high="high"),
            "F": chosen["f"].map(lambda v: "\u2014" if np.isnan(v) else f"{v:.2f}"),
            "p": chosen["p"].map(lambda v: "\u2014" if np.isnan(v) else "< 0.001" if v < 0.001 else f"{v:.3f}"),
            "Reliability (Cicchetti)": chosen["label"].fillna("\u2014"),
        }
    )


def _by_subset(pairs: pd.DataFrame, statistic: str, form: str) -> pd.DataFrame:
    """A subset per row, a pair per column; each cell the statistic, its interval and n (HTML, escaped here)."""
    cells = pairs.assign(
        pair=(pairs["rater"] + " vs " + pairs["reference"]).map(html.escape),
        cell=_column(pairs, statistic, form) + pairs["n"].map("<br><span class='small'>n = {:,}</span>".format),
    )
    wide = cells.pivot(index="subset", columns="pair", values="cell")
    wide = wide.loc[list(dict.fromkeys(pairs["subset"]))]  # the subsets' own order: all, types, joints
    wide = wide[list(dict.fromkeys(cells["pair"]))].reset_index()
    wide.columns = ["Joints", *wide.columns[1:]]
    return wide.assign(Joints=wide["Joints"].map(html.escape))


def _column(frame: pd.DataFrame, name: str, form: str, low: str = "", high: str = "") -> pd.Series:
    low, high = low or f"{name}_low", high or f"{name}_high"
    values = zip(frame[name], frame[low], frame[high], strict=True)
    return pd.Series([interval(v, lo, hi, form) for v, lo, hi in values], index=frame.index)


def table(caption: str, frame: pd.DataFrame, escape: bool = True) -> str:
    """A captioned HTML table of the frame (cells escaped unless they hold HTML already)."""
    content = frame.to_html(index=False, escape=escape, border=0)
    return content.replace('<table class="dataframe">', f"<table><caption>{html.escape(caption)}</caption>", 1)


def figure(png: bytes, caption: str) -> str:
    """A PNG inline (the page stands alone) with its caption."""
    data = base64.b64encode(png).decode()
    alt = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def _venn_section(venn: pd.DataFrame, plots: dict[str, bytes]) -> str:
    if venn.empty:
        return "<h2>Venn diagram</h2><p class='note'>Not drawn: it needs two human raters besides the model.</p>"
    v = venn.iloc[0]
    caption = (
        f"Joints rated by {v['rater_a']}, {v['rater_b']} and {v['rater_c']} (n = {v['n']:,}): in the middle those"
        f" all three gave the same stage, in each overlap those only that pair agreed on (venn.parquet)."
    )
    return "<h2>Venn diagram of agreement (venn.parquet)</h2>" + figure(plots["venn.png"], caption)


def _embedding_section(plots: dict[str, bytes]) -> str:
    """The run's t-SNE map of its crops' embeddings (``erosion embed``), where one was made before this report."""
    if "embedding.png" not in plots:
        return ""
    caption = (
        "A sample of the run's crops, placed by t-SNE so that crops whose penultimate-layer activations are alike lie"
        " close, coloured by the predicted stage (and by the rated stage, where rated): stages that mix in one"
        " place are crops the model finds alike. Distances between clusters mean little (erosion embed)."
    )
    return "<h2>The model's view of the crops (embedding/map.png)</h2>" + figure(plots["embedding.png"], caption)


def _calibration_section(calibration: dict | None, plots: dict[str, bytes]) -> str:
    if not calibration:
        note = "The model card holds no calibration: its probabilities are as trained."
        return f"<h2>Calibration</h2><p class='note'>{note}</p>"
    frame = pd.DataFrame(
        {name: [f"{calibration[name][key]:.4f}" for key in ("ece", "nll", "brier")] for name in ("before", "after")},
        index=["top-label ECE (15 equal-width bins)", "negative log-likelihood", "Brier score"],
    )
    caption = (
        f"Calibration of the stage probabilities on {calibration['rows']:,} joints of the"
        f" {calibration['fitted_on']}, against the rater the model was trained on: prior correction for the class"
        f" weights, then temperature {calibration['temperature']:.3f}. The scores' probs are the calibrated ones;"
        " the predicted stage stays the model's own argmax."
    )
    diagram = (
        figure(plots["reliability.png"], "Reliability before and after calibration.")
        if "reliability.png" in plots
        else ""
    )
    return "<h2>Calibration</h2>" + table(caption, frame) + diagram


def _estimated_section(estimated: pd.DataFrame | None) -> str:
    if estimated is None:
        return ""
    rater = html.escape(str(estimated["reference"].iloc[0]))
    frame = pd.DataFrame(
        {
            "Joints": estimated["joints"],
            "n": estimated["n"].map("{:,.0f}".format),
            "Accuracy": _column(estimated, "accuracy", "{:.1%}"),
            "Balanced accuracy": _column(estimated, "balanced_accuracy", "{:.1%}"),
            "Quadratic kappa": _column(estimated, "kappa", "{:.3f}"),
        }
    )
    caption = (
        f"Expected agreement of the model with {rater} on the joints {rater} has not rated (estimated.parquet): the"
        f" calibrated probabilities taken as the chance that {rater} would give each stage. On the joints {rater}"
        " has rated (out of sample), the same estimate beside what was measured checks it."
    )
    return "<h2>Estimated agreement before ratings arrive</h2>" + table(caption, frame)


def _activity_section(relation: Relation | None, plots: dict[str, bytes], window_days: int, left_out: int) -> str:
    if relation is None:
        return ""
    summary = relation.summary
    frame = pd.DataFrame(
        {
            "Relation": summary["relation"],
            "Score": summary["score"].str.replace("das28_", "DAS28-").str.upper(),
            "Pairs": summary["n"].map("{:,}".format),
            "Patients": summary["patients"].map("{:,}".format),
            "Without a DAS28": summary["without_das28"].map("{:,}".format),
            "Spearman rho (95 % CI)": _column(summary, "rho", "{:.3f}", low="low", high="high"),
        }
    )
    caption = (
        f"Table 7. Rau against disease activity (activity.parquet; the pairs in activity_visits.parquet and"
        f" activity_intervals.parquet). Each visit takes the DAS28 of the patient's assessment nearest in time within"
        f" {window_days} days (of two equally near, the earlier); an interval between consecutive visits takes the"
        " mean of the two visits' DAS28 and the Rau change per year."
    )
    if left_out:
        caption += (
            f" Patients left out as in-sample (the model saw them in training): {left_out:,}; `erosion report"
            " --in-sample` includes their visits."
        )
    parts = [
        "<h2>Disease activity and erosion</h2>",
        "<p>How the Rau score relates to disease activity (DAS28), as the thesis behind the paper asked (it found"
        " only a very weak correlation). Spearman's rho; its interval is a percentile bootstrap that draws whole"
        " patients (2,000 draws), since the visits of one patient are not independent. Bands: remission below 2.6,"
        " low below 3.2, moderate up to 5.1, high above 5.1.</p>",
        table(caption, frame),
    ]
    if "activity.png" in plots:
        parts.append(figure(plots["activity.png"], "Rau against DAS28 with the activity bands (figures/activity.png)."))
    return "\n".join(parts)


def _cam_section(explained: Sequence[Explanation], model: str, humans: list[str]) -> str:
    if not explained:
        return ""
    links = [f'<a href="figures/{e.file}">figures/{e.file}</a>' if e.file else html.escape(e.error) for e in explained]
    frame = pd.DataFrame(
        {"Joint": [html.escape(e.joint_id) for e in explained]}
        | {html.escape(r): [_stage(e.stages[r]) for e in explained] for r in [model, *humans]}
        | {"Heat map": links}
    )
    parts = [
        "<h2>What the model looked at (Grad-CAM)</h2>",
        f"<p>The {len(explained)} joint(s) whose stage by the model lies furthest from the mean stage the human raters"
        " gave, each with a Grad-CAM heat map (Selvaraju et al. 2017): red where the model's last convolutional"
        " block found evidence for the stage it gave, blue where it found none. The map is as coarse as that block"
        " (a few cells across the crop), smoothed to the crop's size: it shows the region the model relied on, not"
        " an edge. Each map is scaled to its own maximum.</p>",
        table(
            "Table 6. The most disagreed-on joints: stage by rater and heat map (figures/cam_*.png)",
            frame,
            escape=False,
        ),
    ]
    for e in explained:
        if e.file:
            caption = f"{e.joint_id}: the model gave stage {_stage(e.stages[model])} (figures/{e.file})."
            parts.append(figure(e.png, caption))
    return "\n".join(parts)


def _stage(value: float) -> str:
    return "\u2014" if np.isnan(value) else f"{value:.0f}"


def _reading() -> str:
    return """<h2>How to read this report</h2>
<ul>
<li><b>Global accuracy</b>: the share of joints given the same stage by both raters.</li>
<li><b>Balanced accuracy</b>: for each stage the reference used, the share of those joints the other rater gave
the same stage; then the mean over stages. It keeps the many healthy joints (stage 0) from dominating.</li>
<li><b>&plusmn;1 balanced accuracy</b>: the same, counting a stage one off as right.</li>
<li><b>Quadratic weighted kappa</b>: agreement beyond chance, where a disagreement counts by the square of its
distance in stages (1 = perfect, 0 = chance). Interval: asymptotic variance of Fleiss, Cohen and Everitt (1969).</li>
<li><b>ICC</b>: intraclass correlation of the stages over all raters on the joints they all rated (Shrout and Fleiss
1979); the interval and p-value come from the F distribution.</li>
<li>Intervals are 95 %; those of the accuracies are Wald intervals. Cicchetti's (1994) labels: below 0.40 poor,
0.40-0.59 fair, 0.60-0.74 good, 0.75 and above excellent.</li>
<li>For comparison, Rohrbach et al. (2019) report on their test set a quadratic kappa of 0.675 (model vs scorer 1),
0.580 (model vs scorer 2) and 0.562 (scorer 1 vs scorer 2), and an ICC of 0.601 over the three.</li>
</ul>"""


def _notes(pairs: pd.DataFrame) -> str:
    noted = pairs[pairs["note"].notna()]
    if noted.empty:
        return ""
    items = "".join(
        f"<li>{html.escape(f'{r.rater} vs {r.reference}, {r.subset}: {r.note}')}</li>" for r in noted.itertuples()
    )
    return f"<h2>Notes</h2><ul class='note'>{items}</ul>"
