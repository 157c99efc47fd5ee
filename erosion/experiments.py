"""The paper's experiments: variants of the model trained on the same split, seeds and epochs, then compared.

``loss`` is the paper's Table 2: the CNN trained with plain and with class-weighted cross-entropy. Each variant
is an ordinary training run (``training.train``, on the connected Ray cluster) under ``<out>/<variant>``; each
published model then predicts the validation and test splits in a plain process (``evaluate.predict_split``)
and is compared with every reference (the rater whose stages it learnt; for a synthetic registry also the
ground truth) by the paper's three accuracies with Wald 95 % intervals and a confusion matrix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from erosion import agreement, evaluate, figures, report, storage, training

SPLITS = ("val", "test")


@dataclass(frozen=True)
class ExperimentConfig:
    """What every variant shares (data, split, seeds, epochs, model size) and where the results go."""

    base: training.TrainConfig  # the variants differ from it in one setting each; base.out is the experiment's
    truth: str = ""  # a synthetic registry's truth table: a second reference beside the rater


def loss_variants(base: training.TrainConfig) -> dict[str, training.TrainConfig]:
    """Table 2 of the paper: plain and class-weighted cross-entropy, all else equal."""
    return {
        "unweighted": dataclasses.replace(base, weighted_loss=False, name="unweighted"),
        "weighted": dataclasses.replace(base, weighted_loss=True, name="weighted"),
    }


def compare(config: ExperimentConfig, variants: dict[str, training.TrainConfig]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every variant (resuming a run already there), then its accuracies and confusion on each split."""
    data = config.base.data
    references = {f"rater {data.rater}": evaluate.rater_series(data.ratings, data.rater, data.options)}
    if config.truth:
        references["ground truth"] = evaluate.truth_stages(config.truth, data.options)
    rows, cells = [], []
    for name, settings in variants.items():
        result = training.train(settings)
        for split in SPLITS:
            predicted = evaluate.predict_split(result.model, data.registry, split, data.split_seed, data.options)
            for reference, stages in references.items():
                common = predicted.index.intersection(stages.index)
                confusion = agreement.confusion_matrix(stages.loc[common].to_numpy(), predicted.loc[common].to_numpy())
                row = {"variant": name, "split": split, "reference": reference, "n": int(confusion.sum())}
                rows.append(row | report.estimate_columns(agreement.accuracies(confusion)))
                cells.append(report.confusion_long(confusion, split, reference, name))
    return pd.DataFrame(rows), pd.concat(cells, ignore_index=True)


def markdown(table: pd.DataFrame) -> str:
    """The comparison as a Markdown table in the form of the paper's Table 2 (percentages, 95 % intervals)."""
    lines = [
        "| variant | split | reference | n | global accuracy | balanced accuracy | +-1 balanced accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples():
        cells = [
            f"{100 * getattr(r, s):.1f} % ({100 * getattr(r, s + '_low'):.1f}-{100 * getattr(r, s + '_high'):.1f})"
            for s in ("accuracy", "balanced_accuracy", "pm1_balanced_accuracy")
        ]
        lines.append(f"| {r.variant} | {r.split} | {r.reference} | {r.n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(out: str, table: pd.DataFrame, confusion: pd.DataFrame, options: storage.StorageOptions) -> None:
    """``table.parquet``, ``confusion.parquet``, ``table.md`` and one confusion plot per variant and split."""
    storage.write_table(f"{out}/table.parquet", pa.Table.from_pandas(table, preserve_index=False), options)
    storage.write_table(f"{out}/confusion.parquet", pa.Table.from_pandas(confusion, preserve_index=False), options)
    storage.write_bytes(f"{out}/table.md", markdown(table).encode(), options)
    for split in SPLITS:
        for name, png in figures.confusion_plots(confusion, split).items():
            storage.write_bytes(f"{out}/figures/{split}_{name}", png, options)
