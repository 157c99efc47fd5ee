"""The report's plots as PNG bytes: confusion matrices (counts and row-normalised), the agreement Venn diagram, Rau
against DAS28."""

from __future__ import annotations

import hashlib
import io
import re

import matplotlib

matplotlib.use("Agg")  # no screen: render to memory
matplotlib.rcParams["text.parse_math"] = False  # labels hold rater names and joint ids as given: "$" is a dollar

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from erosion.core import activity  # noqa: E402
from erosion.core.domain import NUM_STAGES  # noqa: E402


def safe_name(text: str) -> str:
    """``text`` fit for a file name, and told apart from every other text: its ASCII letters and digits (each run
    of other characters one hyphen) and 8 hex digits of its hash (``dr.a`` and ``dr-a`` differ)."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60]
    return f"{readable}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}".lstrip("-")


def file_name(reference: str, rater: str) -> str:
    """The confusion plot's file name for a pair of raters (any characters in rater names made safe)."""
    return "confusion_" + "_vs_".join(safe_name(r) for r in (reference, rater)) + ".png"


def cam_file_name(joint_id: str) -> str:
    """The file name of a joint's Grad-CAM heat map (see :mod:`erosion.report.cam`)."""
    return f"cam_{safe_name(joint_id)}.png"


def confusion_plots(confusion: pd.DataFrame, subset: str) -> dict[str, bytes]:
    """One PNG per pair of raters on one subset: the counts beside the row-normalised shares."""
    plots = {}
    for (reference, rater), cells in confusion[confusion["subset"] == subset].groupby(["reference", "rater"]):
        counts = np.zeros((NUM_STAGES, NUM_STAGES), np.int64)
        counts[cells["reference_stage"], cells["rater_stage"]] = cells["count"]
        rows = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.4), constrained_layout=True)
        for ax, values, title, text in (
            (axes[0], counts, "counts", lambda v: f"{v:d}"),
            (axes[1], shares, "share of each reference stage", lambda v: f"{v:.2f}"),
        ):
            ax.imshow(values / max(values.max(), 1), cmap="Blues", vmin=0, vmax=1)
            for (i, j), v in np.ndenumerate(values):
                dark = values[i, j] > 0.6 * values.max()
                ax.text(j, i, text(v), ha="center", va="center", fontsize=8, color="white" if dark else "black")
            ax.set(xticks=range(NUM_STAGES), yticks=range(NUM_STAGES), xlabel=f"{rater} (stage)")
            ax.set(ylabel=f"{reference} (stage)", title=title)
        fig.suptitle(f"{rater} against {reference}, {subset} (n = {counts.sum()})")
        plots[file_name(reference, rater)] = to_png(fig)
    return plots


def venn_plot(venn: pd.DataFrame) -> dict[str, bytes]:
    """The three raters as circles; each overlap holds the joints on which those raters, and only they, agree."""
    if venn.empty:
        return {}
    v = venn.iloc[0]
    fig, ax = plt.subplots(figsize=(6, 5.6), constrained_layout=True)
    centres = {"a": (-0.6, 0.35), "b": (0.6, 0.35), "c": (0.0, -0.65)}
    for (key, (x, y)), colour in zip(centres.items(), ("tab:blue", "tab:orange", "tab:green"), strict=True):
        ax.add_patch(Circle((x, y), 1.05, alpha=0.25, color=colour))
        ax.text(x * 1.9, y * 1.75 + (0.25 if y > 0 else -0.25), v[f"rater_{key}"], ha="center", fontsize=10)
    labels = {(0.0, 0.8): v["only_ab"], (-0.55, -0.35): v["only_ac"], (0.55, -0.35): v["only_bc"], (0, 0): v["all"]}
    for (x, y), count in labels.items():
        ax.text(x, y, f"{count:,}", ha="center", va="center", fontsize=12, weight="bold")
    ax.set(xlim=(-2.2, 2.2), ylim=(-2.2, 1.9), aspect="equal")
    ax.axis("off")
    ax.set_title(f"Agreement on {v['n']:,} joints rated by all three; no two agree on {v['none']:,}")
    return {"venn.png": to_png(fig)}


def learning_curve(history: list[dict], best_epoch: int) -> bytes:
    """A training run's curves per epoch as PNG: the losses, then the three accuracies, training (dashed: on the
    augmented batches as they were trained) and validation (solid); the learning rate on its own axis; the best
    epoch marked."""
    epochs = [row["epoch"] + 1 for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    loss, accuracy = axes
    for split, style in (("train", "--"), ("val", "-")):
        loss.plot(epochs, [row.get(f"{split}_loss", np.nan) for row in history], style, label=f"{split} loss")
        for name, colour in (
            ("accuracy", "tab:blue"),
            ("balanced_accuracy", "tab:orange"),
            ("pm1_balanced_accuracy", "tab:green"),
        ):
            values = [row.get(f"{split}_{name}", np.nan) for row in history]
            accuracy.plot(epochs, values, style, color=colour, label=f"{split} {name.replace('_', ' ')}")
    rate = loss.twinx()
    rate.plot(epochs, [row.get("learning_rate", np.nan) for row in history], ":", color="grey", label="learning rate")
    rate.set_ylabel("learning rate")
    for ax in axes:
        ax.axvline(best_epoch + 1, color="black", linewidth=0.8, alpha=0.5)
        ax.set_xlabel("epoch")
    loss.set(ylabel="loss (class-weighted)", title=f"loss (best epoch {best_epoch + 1} marked)")
    loss.legend(loc="upper right", fontsize=8)
    accuracy.set(ylabel="accuracy", ylim=(0, 1), title="accuracies")
    accuracy.legend(loc="lower right", fontsize=7, ncol=2)
    return to_png(fig)


def reliability_diagram(calibration: dict) -> bytes:
    """A model card's calibration (``evaluate.fit_calibration``) as PNG: accuracy against mean confidence of the top
    stage per bin, before and after, beside the diagonal; the bars show how many joints each bin holds."""
    fig, (curve, counts) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    curve.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    edges = np.linspace(0, 1, len(calibration["before"]["bin_count"]) + 1)
    for name, colour in (("before", "tab:red"), ("after", "tab:blue")):
        part = calibration[name]
        x = np.array([np.nan if v is None else v for v in part["bin_confidence"]], dtype=float)
        y = np.array([np.nan if v is None else v for v in part["bin_accuracy"]], dtype=float)
        curve.plot(x, y, "o-", color=colour, label=f"{name}: ECE {part['ece']:.3f}, NLL {part['nll']:.3f}")
        counts.bar(
            edges[:-1], part["bin_count"], width=np.diff(edges), align="edge", alpha=0.45, color=colour, label=name
        )
    curve.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence of the top stage", ylabel="accuracy")
    curve.set_title(f"reliability, {calibration['rows']:,} {calibration['fitted_on']} joints")
    curve.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="confidence of the top stage", ylabel="joints", title="joints per bin")
    counts.legend(fontsize=8)
    return to_png(fig)


BAND_COLOURS = {"remission": "tab:green", "low": "tab:olive", "moderate": "tab:orange", "high": "tab:red"}


def activity_plot(relation: activity.Relation) -> bytes:
    """Rau against DAS28 as PNG: a column per score (ESR, CRP), the visits above (Rau at the visit against its
    DAS28), the intervals below (Rau change per year against the mean DAS28 of the two visits); the activity bands
    shaded, each panel's Spearman rho with its patient-clustered interval in the title."""
    summary = relation.summary.set_index(["relation", "score"])
    scores = list(dict.fromkeys(relation.summary["score"]))
    panels = (
        (activity.RELATIONS[0], relation.visits, "rau", "Rau score at the visit"),
        (activity.RELATIONS[1], relation.intervals, "rau_change_per_year", "Rau change per year"),
    )
    fig, axes = plt.subplots(2, len(scores), figsize=(5.2 * len(scores), 8.4), squeeze=False, constrained_layout=True)
    for column, score in enumerate(scores):
        for row, (name, frame, value, label) in enumerate(panels):
            ax, result = axes[row, column], summary.loc[(name, score)]
            for band, low, high in activity.BANDS:
                ax.axvspan(low, min(high, 10.0), color=BAND_COLOURS[band], alpha=0.12, linewidth=0, label=band)
            ax.scatter(frame[score], frame[value], s=9, alpha=0.6, color="black", linewidth=0)
            kind = score.removeprefix("das28_").upper()
            mean = " (mean of the two visits)" if row else ""
            ax.set(xlim=(0, 9), xlabel=f"DAS28-{kind}{mean}", ylabel=label)
            interval = f"rho {result['rho']:.2f} ({result['low']:.2f} to {result['high']:.2f})"
            rho = "rho undefined" if np.isnan(result["rho"]) else interval
            counts = f"n = {int(result['n']):,}, {int(result['patients']):,} patients"
            ax.set_title(f"{name}: {rho}\n{counts}", fontsize=10)
    axes[0, 0].legend(loc="upper left", fontsize=8, title="DAS28 band", title_fontsize=8)
    return to_png(fig)


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (110 dpi); the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
