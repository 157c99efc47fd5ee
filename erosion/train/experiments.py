"""The paper's experiments: variants of the model trained on the same split, seeds and epochs, then compared.

Each variant differs from a base training run in what it studies and nothing else:

- ``loss`` (the paper's Table 2 and the thesis's models a, b, c): the CNN with plain cross-entropy, with plain
  cross-entropy on minority stages oversampled to about equal counts (the thesis's model b; given the plain run's
  optimizer steps, see :func:`equal_steps`), and with class-weighted cross-entropy;
- ``head`` (the thesis's regression): the class-weighted classifier and the CDF head trained with plain CRPS (the
  thesis kept its unweighted regression model: weighting gave it larger errors, its Table 5);
- ``all``: both, and VGG16 (the paper's transfer model; its own input size, ImageNet weights where a file is
  given): what the README's results table rests on.

Each variant is an ordinary training run (``training.train``, on the connected Ray cluster) under
``<out>/<variant>`` (the same command resumes a stopped experiment's runs). Each published model then
predicts the validation and test splits in a plain process (``evaluate.predict_split``), plainly and, with
``tta`` > 0, with test-time augmentation too, and is compared with every reference: each rater of the ratings
table and, for a synthetic registry, the ground truth. The comparison gives the paper's three accuracies with
Wald 95 % intervals, quadratic kappa, the CDF head's % error and a confusion matrix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from erosion.core import domain
from erosion.core.settings import setting
from erosion.io import storage
from erosion.model import augment
from erosion.report import figures, tables
from erosion.train import evaluate, labelled, training

SPLITS = ("val", "test")
KINDS = ("loss", "head", "all")
KINDS_HELP = (
    "loss: unweighted, oversampled and class-weighted (Table 2, the thesis's models a-c); head: classifier vs CDF"
    " head; all: both and VGG16"
)


@dataclass(frozen=True)
class ExperimentConfig:
    """What every variant shares (data, split, seeds, epochs, model size), how they are judged, where results go."""

    base: training.TrainConfig = setting(
        "what the variants share; each differs in one setting; base.out is the experiment's"
    )
    truth: str = setting("a synthetic registry's truth table: a reference beside the raters", "")
    tta: int = setting("> 0: every variant is also judged with the mean over this many augmented views", 0)
    tta_seed: int = setting("the seed the views are drawn from", 0)
    vgg16_input_size: int = setting("the VGG16 variant's input size; 0: the base's", 0)


def variants(kind: str, config: ExperimentConfig) -> dict[str, training.TrainConfig]:
    """The training runs an experiment compares, by name."""
    base = config.base
    cdf_model = dataclasses.replace(base.model, head="cdf")
    vgg16_model = dataclasses.replace(
        base.model, arch="vgg16", width=1.0, input_size=config.vgg16_input_size or base.model.input_size
    )
    runs = {
        "unweighted": dataclasses.replace(base, weighted_loss=False, name="unweighted"),
        "oversampled": dataclasses.replace(base, weighted_loss=False, oversample=True, name="oversampled"),
        "weighted": dataclasses.replace(base, weighted_loss=True, weight_power=1.0, name="weighted"),
        "cdf": dataclasses.replace(base, weighted_loss=False, name="cdf", model=cdf_model),
        "vgg16": dataclasses.replace(base, weighted_loss=True, name="vgg16", model=vgg16_model),
    }
    chosen = {
        "loss": ("unweighted", "oversampled", "weighted"),
        "head": ("weighted", "cdf"),
        "all": ("unweighted", "weighted", "cdf", "vgg16"),
    }[kind]
    return {name: runs[name] for name in chosen}


def describe(settings: training.TrainConfig) -> str:
    """The model a variant trains, in words: architecture, input size, head, loss, start."""
    model = settings.model
    words = [f"{model.arch} {model.input_size} px"]
    if model.arch == "cnn" and model.width != 1.0:
        words.append(f"width {model.width:g}")
    words.append("CDF head, CRPS" if model.head == "cdf" else "stages head, cross-entropy")
    words.append("class-weighted" if settings.weighted_loss else "unweighted")
    if settings.oversample:
        words.append("minority stages oversampled")
    if model.arch == "vgg16":
        start = "ImageNet weights" if settings.pretrained else "random start"
        words.append(f"{start}, {min(settings.frozen_epochs, settings.epochs)} frozen epochs")
    return ", ".join(words)


def equal_steps(settings: training.TrainConfig) -> training.TrainConfig:
    """An oversampled run given the optimizer steps of the same run without it: its epochs divided by how much
    oversampling grows an epoch (at least one). The thesis trained its model b longer than the others; equal
    steps compare the data, not the budget. Other runs as they are."""
    if not settings.oversample:
        return settings
    labels = labelled.split_labels(settings.data, "train")
    growth = domain.oversampling_factors(labels)[labels].sum() / labels.size
    return dataclasses.replace(settings, epochs=max(1, round(settings.epochs / growth)))


def compare(config: ExperimentConfig, runs: dict[str, training.TrainConfig]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every variant (resuming a run already there), then judge it on each split against each reference."""

    data = config.base.data
    references = {f"rater {r}": evaluate.rater_reference(data.ratings, r, data.options) for r in _raters(data)}
    if config.truth:
        references["ground truth"] = evaluate.truth_reference(config.truth, data.options)
    views = {0: None} | ({config.tta: augment.views(config.tta, seed=config.tta_seed)} if config.tta else {})
    rows, cells = [], []
    for name, settings in runs.items():
        settings = equal_steps(settings)
        result = training.train(settings)
        for tta, view in views.items():
            for split in SPLITS:
                predicted = evaluate.predict_split(
                    result.model, data.registry, split, data.split_seed, data.options, view
                )
                for reference, truth in references.items():
                    columns, confusion = evaluate.compare(predicted, truth)
                    row = {"variant": name, "model": describe(settings), "epochs": settings.epochs, "tta": tta}
                    rows.append(row | {"split": split, "reference": reference} | columns)
                    cells.append(tables.confusion_long(confusion, split, reference, _label(name, tta)))
    return pd.DataFrame(rows), pd.concat(cells, ignore_index=True)


def markdown(table: pd.DataFrame) -> str:
    """The comparison as a Markdown table in the form of the paper's Table 2 (percentages, 95 % intervals),
    with quadratic kappa and the CDF head's mean absolute % error beside it."""
    lines = [
        "| variant | TTA | split | reference | n | global accuracy | balanced accuracy | +-1 balanced accuracy "
        "| quadratic kappa | % MAE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples():
        cells = [
            f"{100 * getattr(r, s):.1f} % ({100 * getattr(r, s + '_low'):.1f}-{100 * getattr(r, s + '_high'):.1f})"
            for s in ("accuracy", "balanced_accuracy", "pm1_balanced_accuracy")
        ]
        cells.append(f"{r.kappa:.3f} ({r.kappa_low:.3f}-{r.kappa_high:.3f})" if r.kappa == r.kappa else "-")
        cells.append(f"{r.pct_mae:.1f}" if r.pct_mae == r.pct_mae else "-")
        tta = f"{r.tta} views" if r.tta else "-"
        lines.append(f"| {r.variant} | {tta} | {r.split} | {r.reference} | {r.n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def models(table: pd.DataFrame) -> str:
    """Which model and epochs each variant rests on, one line each."""
    chosen = table.drop_duplicates("variant")
    return "".join(f"- {r.variant}: {r.model}, {r.epochs} epochs\n" for r in chosen.itertuples())


def write(out: str, table: pd.DataFrame, confusion: pd.DataFrame, options: storage.StorageOptions) -> None:
    """``table.parquet``, ``confusion.parquet``, ``table.md`` and one confusion plot per variant and split."""
    storage.write_table(f"{out}/table.parquet", pa.Table.from_pandas(table, preserve_index=False), options)
    storage.write_table(f"{out}/confusion.parquet", pa.Table.from_pandas(confusion, preserve_index=False), options)
    storage.write_bytes(f"{out}/table.md", (models(table) + "\n" + markdown(table)).encode(), options)
    for split in SPLITS:
        for name, png in figures.confusion_plots(confusion, split).items():
            storage.write_bytes(f"{out}/figures/{split}_{name}", png, options)


def _raters(data: labelled.LabelSet) -> list[str]:
    """The rater the variants learn from first, then every other rater of the ratings table."""
    return [data.rater] + [r for r in evaluate.raters(data.ratings, data.options) if r != data.rater]


def _label(name: str, tta: int) -> str:
    return f"{name} tta{tta}" if tta else name
