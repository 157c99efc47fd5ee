"""One page of figures across the committed nights of an output folder: ``erosion runs --out OUT --html DIR``.

Reads only the nights' small tables (``monitoring/`` and ``drift/``, a few rows each): counts with the band they
were allowed to move in, the predicted stage mix, the drift statistics with their alert thresholds, the crops'
intensity, and every alert, night by night.
"""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import pandas as pd

from erosion.core import domain
from erosion.io import runs, storage
from erosion.report import monitoring, page
from erosion.report.figures import to_png  # it also sets matplotlib up: no screen, no mathtext in labels


def write(out: str, folder: str, options: storage.StorageOptions | None = None) -> str:
    """Write ``runs.html`` into ``folder`` for the monitored nights committed under ``out``; returns its path."""
    nights = [m for m in runs.committed(out, options) if "monitoring" in m.outputs]
    if not nights:
        raise ValueError(f"no committed night under {out} has a monitoring table (erosion nightly writes them).")
    tables = [monitoring.read(m, "monitoring", options).to_pandas() for m in nights]
    summary = pd.concat(tables, ignore_index=True)
    drifts = [monitoring.read(m, "drift", options).to_pandas() for m in nights if "drift" in m.outputs]
    drift = pd.concat(drifts, ignore_index=True) if drifts else pd.DataFrame(columns=monitoring.DRIFT.names)
    order = [m.run_id for m in nights]
    totals = summary[(summary["scope"] == monitoring.ALL) & (summary["body_part"] == monitoring.ALL)]
    totals = totals.set_index("run_id").loc[order]
    parts = [
        f"<h1>Nightly monitoring: {len(nights)} nights in {html.escape(out)}</h1>",
        "<p>Each night is compared with the nights before it (the reference named in its manifest). A dotted red line"
        " is an alert threshold; a point above it raised an alert. Rows 'scored tonight' are those not carried over"
        " from an earlier night: new visits, changed images, or all of them under a new model.</p>",
        page.table("Per night (all joints)", _facts(totals, nights)),
        page.figure(_counts(totals, drift, order), "Rows per night; the shaded band is where the row count may move."),
        page.figure(_stage_mix(totals), "The model's stage mix per night (all joints)."),
        page.figure(_drift(drift, order), "Drift statistics against each night's reference, all joints."),
        page.figure(_intensity(summary, order), "The crops' mean intensity and spread (decode-time statistics)."),
        _alerts(nights),
    ]
    path = f"{folder.rstrip('/')}/runs.html"
    storage.write_bytes(path, page.document(f"Nightly monitoring, {out}", parts).encode(), options)
    return path


def _alerts(nights: list[runs.RunManifest]) -> str:
    """Each night's alerts, a list per night (folded), or that no night raised one."""
    raised = [m for m in nights if m.alerts]
    if not raised:
        return "<h2>Alerts</h2><p>No night raised an alert.</p>"
    parts = ["<h2>Alerts</h2>"]
    for m in raised:
        items = "".join(f"<li>{html.escape(a['message'])}</li>" for a in m.alerts)
        summary = f"{html.escape(m.run_id)}: {len(m.alerts)} alert(s), model {m.model_version[:12]}"
        parts.append(f'<details><summary>{summary}</summary><ul class="alert">{items}</ul></details>')
    return "".join(parts)


def _counts(totals: pd.DataFrame, drift: pd.DataFrame, order: list[str]) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 3.6), constrained_layout=True)
    x = range(len(order))
    ax.plot(x, totals["rows"].to_numpy(), "-", linewidth=6, alpha=0.3, color="tab:blue", label="rows")
    for name, colour in (("scored", "tab:orange"), ("carried", "tab:green"), ("failed", "tab:red")):
        ax.plot(x, totals[name].to_numpy(), "o-", color=colour, label=name)
    band = drift[drift["metric"] == "count_rows"].set_index("run_id").reindex(order)
    ax.fill_between(x, band["low"].to_numpy(dtype=float), band["threshold"].to_numpy(dtype=float),
                    color="tab:blue", alpha=0.12, label="rows: allowed band")  # fmt: skip
    _nights_axis(ax, order)
    ax.set(ylabel="rows", title="rows per night")
    ax.legend(fontsize=8, ncol=5)
    return to_png(fig)


def _stage_mix(totals: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 3.4), constrained_layout=True)
    counts = pd.DataFrame(totals["stage_counts"].tolist(), index=totals.index)
    shares = counts.div(counts.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0)
    bottom = pd.Series(0.0, index=shares.index)
    for stage in range(domain.NUM_STAGES):
        ax.bar(range(len(shares)), shares[stage], bottom=bottom, label=f"stage {stage}")
        bottom += shares[stage]
    _nights_axis(ax, list(shares.index))
    ax.set(ylabel="share of scored joints", ylim=(0, 1))
    ax.legend(fontsize=8, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    return to_png(fig)


def _drift(drift: pd.DataFrame, order: list[str]) -> bytes:
    metrics = ["stage_mix_psi", *(f"ks_{name}" for name in monitoring.HISTOGRAMS)]
    fig, grid = plt.subplots(2, 3, figsize=(12, 6.4), constrained_layout=True)
    axes = grid.ravel()
    whole = drift[drift["body_part"] == monitoring.ALL]
    for ax, metric in zip(axes, metrics, strict=False):
        for scope, style in ((monitoring.ALL, "o-"), (monitoring.NEW, "s--")):
            rows = whole[(whole["metric"] == metric) & (whole["scope"] == scope)].set_index("run_id").reindex(order)
            label = "all rows" if scope == monitoring.ALL else "rows scored tonight"
            ax.plot(range(len(order)), rows["value"].to_numpy(dtype=float), style, label=label)
        threshold = whole.loc[whole["metric"] == metric, "threshold"].dropna()
        if len(threshold):
            ax.axhline(threshold.iloc[-1], color="tab:red", linestyle=":", label="alert threshold")
        _nights_axis(ax, order)
        ax.set_title(metric.replace("_", " ").replace("ks ", "Kolmogorov-Smirnov D, "), fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].axis("off")
    axes[-1].legend(handles, labels, loc="center")
    return to_png(fig)


def _intensity(summary: pd.DataFrame, order: list[str]) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 3.2), constrained_layout=True)
    whole = summary[summary["body_part"] == monitoring.ALL]
    for scope, style in ((monitoring.ALL, "-"), (monitoring.NEW, "--")):
        rows = whole[whole["scope"] == scope].set_index("run_id").reindex(order)
        for name in ("mean_intensity_mean", "mean_intensity_sd", "mean_saturated"):
            label = f"{name.removeprefix('mean_')} ({'all rows' if scope == monitoring.ALL else 'scored tonight'})"
            ax.plot(range(len(order)), rows[name].to_numpy(dtype=float), "o" + style, label=label)
    _nights_axis(ax, order)
    ax.set(ylabel="share of the bit depth's range", title="crop intensity")
    ax.legend(fontsize=7, ncol=2)
    return to_png(fig)


def _facts(totals: pd.DataFrame, nights: list[runs.RunManifest]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "night": [m.run_id for m in nights],
            "model": [m.model_version[:12] for m in nights],
            "rows": totals["rows"].to_numpy(),
            "scored tonight": [m.rows.get("scored", 0) - m.rows.get("carried", 0) for m in nights],
            "failed": totals["failed"].to_numpy(),
            "Rau median": totals["rau_q50"].round(1).to_numpy(),
            "reference nights": [len(m.monitored_against) for m in nights],
            "alerts": [len(m.alerts) for m in nights],
        }
    )


def _nights_axis(ax, order: list[str]) -> None:
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=7)
