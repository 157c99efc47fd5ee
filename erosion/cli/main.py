"""The ``erosion`` command line: builds a config per job and calls the library; printing lives here only."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from erosion.core.agreement import ICC_FORMS
from erosion.core.domain import ALL_JOINTS
from erosion.io import runs, storage
from erosion.model.augment import NO_AUGMENTATION, AugmentConfig
from erosion.model.network import ARCHITECTURES, HEADS, ModelConfig
from erosion.registry import ingest, synth, validate
from erosion.report import report
from erosion.train import evaluate
from erosion.train.experiments import KINDS

if TYPE_CHECKING:
    from erosion.score import scoring
    from erosion.train import training
from erosion.core.split import SPLITS


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``erosion`` sub-command; returns the process exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("erosion").setLevel(logging.INFO)
    return args.run(args)


def parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    top = argparse.ArgumentParser(prog="erosion", description=__doc__)
    commands = top.add_subparsers(required=True, metavar="COMMAND")

    p = commands.add_parser("synth", help="write a synthetic registry with ratings and ground truth")
    p.add_argument("--patients", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder or s3:// URL for registry/, ratings/, truth/")
    p.add_argument("--hands", default="hand_left,hand_right", help="comma-separated: hand_left,hand_right")
    p.add_argument(
        "--rescored-fraction", type=float, default=0.1, help="chance a radiograph is re-scored (x5 if eroded)"
    )
    p.add_argument("--rows-per-file", type=int, default=5_000)
    _storage_arguments(p)
    p.set_defaults(run=_synth)

    p = commands.add_parser("ingest", help="turn a CSV of labels and a folder of crops into a registry")
    p.add_argument("--labels", required=True, help="the CSV export")
    p.add_argument("--images", required=True, help="the folder of crops")
    p.add_argument("--out", required=True)
    p.add_argument("--form", choices=("wide", "long"), default="wide")
    p.add_argument("--label-kind", choices=("pct", "stage"), default="pct")
    p.add_argument("--rater", default="registry")
    p.add_argument("--image-name", default="{sop_iuid}_{joint}.jpg", help="crop file name template")
    p.add_argument("--date-format", default=None, help="strptime format; default ISO 8601")
    p.add_argument("--columns", default=None, help="JSON file mapping CSV columns (see README)")
    _storage_arguments(p)
    p.set_defaults(run=_ingest)

    p = commands.add_parser("validate", help="check a registry and its ratings against the contracts")
    p.add_argument("--registry", required=True)
    p.add_argument("--ratings", default=None)
    p.add_argument("--report", default=None, help="write the problems here as Parquet")
    _storage_arguments(p)
    p.set_defaults(run=_validate)

    p = commands.add_parser("train", help="train the CNN or VGG16 on Ray Train (resumes a run of the same --name)")
    _training_arguments(p, out="folder or s3:// URL; the run lives in <out>/<name>", epochs=10)
    p.add_argument("--name", default="erosion", help="run name; the same name resumes the run")
    p.add_argument("--unweighted", action="store_true", help="plain (unweighted) loss instead of class-weighted")
    p.add_argument("--arch", choices=ARCHITECTURES, default="cnn", help="cnn: the paper's CNN; vgg16: transfer")
    p.add_argument("--head", choices=tuple(HEADS), default="stages", help="stages: classifier; cdf: % eroded, CRPS")
    p.set_defaults(run=_train)

    p = commands.add_parser("experiment", help="the paper's experiments: variants trained and compared on one split")
    p.add_argument(
        "kind",
        choices=KINDS,
        help="loss: unweighted vs class-weighted (Table 2); head: classifier vs CDF head; all: both and VGG16",
    )
    _training_arguments(p, out="each variant's run lives in <out>/<variant>; the tables and plots in <out>", epochs=5)
    p.add_argument("--truth", default=None, help="a synthetic registry's truth/ table, to compare with too")
    p.add_argument("--tta", type=int, default=0, help="also judge every variant with this many augmented views")
    p.add_argument("--tta-seed", type=int, default=0, help="the seed the views are drawn from")
    p.add_argument("--vgg16-input-size", type=int, default=0, help="the VGG16 variant's input (default: --input-size)")
    p.set_defaults(run=_experiment)

    p = commands.add_parser("evaluate", help="a trained model's accuracies on one split (plain process, no Ray)")
    p.add_argument("--model", required=True, help="a training run's folder or its model/")
    p.add_argument("--registry", required=True)
    p.add_argument("--ratings", required=True)
    p.add_argument("--rater", default="registry")
    p.add_argument("--truth", default=None, help="a synthetic registry's truth/ table, to compare with too")
    p.add_argument("--split", choices=SPLITS, default="val")
    p.add_argument("--split-seed", type=int, default=0)
    _storage_arguments(p)
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("score", help="score a registry with a trained model on Ray Data; scores and Rau scores")
    _scoring_arguments(p, run_id="default: the start time, UTC (e.g. 20261123T020000Z)")
    p.set_defaults(run=_score)

    p = commands.add_parser("report", help="agreement of the model with each human rater: Parquet, plots, HTML")
    p.add_argument("--scores", required=True, help="a committed scoring run, <out>/<run-id>")
    p.add_argument("--ratings", required=True, help="the ratings table")
    p.add_argument("--out", default="", help="the report's folder (default: <scores>/report)")
    p.add_argument("--split", choices=("all", *SPLITS), default="all", help="only the joints of one patient split")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--icc-form", choices=tuple(ICC_FORMS), default="ICC2", help="the ICC form the page shows")
    p.add_argument("--venn", default="", help="three comma-separated raters (default: the model and two humans)")
    p.add_argument("--cam", type=int, default=0, help="Grad-CAM heat maps of the N most disagreed-on joints")
    p.add_argument("--registry", default="", help="the registry the heat maps' crops come from (default: the run's)")
    _storage_arguments(p)
    p.set_defaults(run=_report)

    p = commands.add_parser("nightly", help="one dated run: score (carrying unchanged joints over), Rau, report")
    p.add_argument("--ratings", required=True, help="the ratings table, for the agreement report")
    _scoring_arguments(p, run_id="default: today's date, UTC (e.g. 2026-11-23)")
    p.add_argument("--report-split", choices=("all", *SPLITS), default="all")
    p.set_defaults(run=_nightly)

    p = commands.add_parser("runs", help="the committed runs under a folder, with their counts")
    p.add_argument("--out", required=True)
    _storage_arguments(p)
    p.set_defaults(run=_runs)

    p = commands.add_parser("benchmark-train", help="training throughput: bare step, augmented step, Ray Train")
    p.add_argument("--registry", required=True, help="a folder with registry/ and ratings/ (erosion synth)")
    p.add_argument("--out", required=True, help="where the pipeline run writes checkpoints")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="timed steps of the in-process loops")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the in-process steps (one worker's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.set_defaults(run=_benchmark_train)

    p = commands.add_parser("benchmark-score", help="scoring throughput: end to end, model only, decode only, naive")
    p.add_argument("--registry", required=True, help="a source registry table; its rows are repeated to each size")
    p.add_argument("--model", required=True, help="a training run's folder or checkpoint")
    p.add_argument("--out", required=True, help="where the sized registries and the runs go")
    p.add_argument("--sizes", default="10000,100000", help="comma-separated registry sizes")
    p.add_argument("--model-only-rows", type=int, default=100_000, help="at most this many for the model-only rate")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.set_defaults(run=_benchmark_score)

    p = commands.add_parser("demo", help="the whole job on a synthetic registry and a local Ray")
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: a new temporary folder")
    p.add_argument("--epochs", type=int, default=3)
    p.set_defaults(run=_demo)
    return top


def _training_arguments(p: argparse.ArgumentParser, out: str, epochs: int) -> None:
    p.add_argument("--registry", required=True)
    p.add_argument("--ratings", required=True)
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--rater", default="registry", help="whose stages are the labels")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=128, help="per worker")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--input-size", type=int, default=150, help="150: the paper's; 64 trains fast on CPU")
    p.add_argument("--width", type=float, default=1.0, help="1: the paper's; 0.25 trains fast on CPU")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-failures", type=int, default=2)
    p.add_argument("--pretrained", default=None, help="vgg16: local torchvision vgg16 .pth (ImageNet); else random")
    p.add_argument("--frozen-epochs", type=int, default=25, help="vgg16: epochs on frozen features, then all layers")
    p.add_argument("--frozen-lr", type=float, default=1e-4, help="vgg16: learning rate while the features are frozen")
    p.add_argument("--finetune-lr", type=float, default=1e-5, help="vgg16: learning rate once all layers train")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS or a local Ray)")
    _storage_arguments(p)


def _scoring_arguments(p: argparse.ArgumentParser, run_id: str) -> None:
    p.add_argument("--registry", required=True)
    p.add_argument("--model", required=True, help="a training run's folder (erosion train's <out>/<name>)")
    p.add_argument("--out", required=True, help="runs are committed to <out>/<run-id>/")
    p.add_argument("--run-id", default="", help=run_id)
    p.add_argument("--batch-size", type=int, default=256, help="crops per model call")
    p.add_argument("--actors", type=int, default=1, help="model actors")
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    p.add_argument("--tta", type=int, default=0, help="test-time augmentation: mean over this many augmented views")
    p.add_argument("--tta-seed", type=int, default=0, help="the seed the views are drawn from")
    p.add_argument("--address", default=None, help="a Ray cluster to join (default: $RAY_ADDRESS or a local Ray)")
    _storage_arguments(p)


def _storage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint", default=None, help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--s3-region", default=None, help="default: $AWS_REGION / $AWS_DEFAULT_REGION")
    p.add_argument("--aws-profile", default=None, help="credentials profile (default: the AWS environment)")


def _options(args: argparse.Namespace) -> storage.StorageOptions:
    return storage.StorageOptions(endpoint_url=args.s3_endpoint, region=args.s3_region, profile=args.aws_profile)


def _synth(args: argparse.Namespace) -> int:
    config = synth.SynthConfig(
        patients=args.patients,
        out=args.out,
        seed=args.seed,
        hands=tuple(args.hands.split(",")),
        rescored_fraction=args.rescored_fraction,
        rows_per_file=args.rows_per_file,
    )
    manifest = synth.generate(config, _options(args))
    rows = manifest["rows"]
    print(
        f"wrote {rows['registry']} joints, {rows['ratings']} ratings to {args.out} "
        f"in {manifest['seconds']} s ({manifest['joints_per_second']} joints/s)"
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    config = ingest.IngestConfig(
        labels=args.labels,
        images=args.images,
        out=args.out,
        form=args.form,
        label_kind=args.label_kind,
        rater=args.rater,
        image_name=args.image_name,
        date_format=args.date_format,
        columns=ingest.load_column_map(args.columns),
    )
    rows = ingest.ingest(config, _options(args))["rows"]
    print(f"ingested {rows['registry']} joints and {rows['ratings']} ratings into {args.out}")
    if rows["errors"]:
        print(f"{rows['errors']} rows rejected: see {args.out.rstrip('/')}/ingest_errors/")
    return 0


def _train(args: argparse.Namespace) -> int:
    from erosion.io import runtime  # Ray
    from erosion.train import training  # Ray only where a command needs it

    config = _train_config(args)
    config = dataclasses.replace(
        config,
        name=args.name,
        weighted_loss=not args.unweighted,
        model=dataclasses.replace(config.model, arch=args.arch, head=args.head),
    )
    runtime.init_ray(args.address)
    _print_training(training.train(config))
    return 0


def _train_config(args: argparse.Namespace) -> training.TrainConfig:
    from erosion.train import labelled, training

    return training.TrainConfig(
        data=labelled.LabelSet(args.registry, args.ratings, args.rater, args.split_seed, _options(args)),
        out=args.out,
        epochs=args.epochs,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        model=ModelConfig(input_size=args.input_size, width=args.width),
        augment=NO_AUGMENTATION if args.no_augment else AugmentConfig(),
        max_failures=args.max_failures,
        pretrained=args.pretrained,
        frozen_epochs=args.frozen_epochs,
        frozen_lr=args.frozen_lr,
        finetune_lr=args.finetune_lr,
    )


def _experiment(args: argparse.Namespace) -> int:
    from erosion.io import runtime  # Ray only where a command needs it
    from erosion.train import experiments

    config = experiments.ExperimentConfig(
        base=_train_config(args),
        truth=args.truth or "",
        tta=args.tta,
        tta_seed=args.tta_seed,
        vgg16_input_size=args.vgg16_input_size,
    )
    runtime.init_ray(args.address)
    table, confusion = experiments.compare(config, experiments.variants(args.kind, config))
    experiments.write(args.out, table, confusion, _options(args))
    print(f"{args.kind} experiment on split seed {args.split_seed}, labels of rater {args.rater}:")
    print(experiments.models(table) + "\n" + experiments.markdown(table), end="")
    print(f"tables and plots in {args.out}")
    return 0


def _print_training(result: training.TrainResult) -> None:
    card, best = result.card, result.best
    if card.model.arch != "cnn":
        model = f"{card.model.arch} ({card.model.input_size} px, {'pretrained' if card.pretrained else 'random start'})"
    else:
        model = "the paper's model" if card.model == ModelConfig() else f"a reduced model ({card.model})"
    print(f"trained {model}, {len(card.history)} epochs; best epoch {card.epoch + 1} by validation balanced accuracy:")
    print(
        f"    accuracy {best['val_accuracy']:.3f}, balanced {best['val_balanced_accuracy']:.3f}, "
        f"+-1 balanced {best['val_pm1_balanced_accuracy']:.3f} on {best['val_rows']} validation crops"
    )
    print(f"    model {card.model_version} in {result.model}")


def _score(args: argparse.Namespace) -> int:
    from erosion.io import runtime  # Ray only where a command needs it
    from erosion.score import scoring

    runtime.init_ray(args.address)
    _print_scoring(scoring.score(_score_config(args)))
    return 0


def _score_config(args: argparse.Namespace) -> scoring.ScoreConfig:
    from erosion.score import scoring

    return scoring.ScoreConfig(
        registry=args.registry,
        model=args.model,
        out=args.out,
        run_id=args.run_id,
        batch_size=args.batch_size,
        actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=args.cpus_per_actor,
        tta=args.tta,
        tta_seed=args.tta_seed,
        options=_options(args),
    )


def _print_scoring(result: scoring.ScoreResult) -> None:
    print(
        f"scored {result.scored} of {result.rows} crops with model {result.model_version}, {result.failed} failed, "
        f"in {result.seconds:.1f} s ({result.crops_per_s:.0f} crops/s end to end)"
    )
    for reason, count in sorted(result.errors.items(), key=lambda item: -item[1]):
        print(f"    {count} {reason}")
    for joint_id, error in result.examples[:10]:
        print(f"    e.g. {joint_id}: {error}")
    print(f"    Rau scores of {result.visits} visits; run {result.run_id} committed to {result.run}")


def _report(args: argparse.Namespace) -> int:
    config = report.ReportConfig(
        scores=args.scores,
        ratings=args.ratings,
        out=args.out,
        split=args.split,
        split_seed=args.split_seed,
        icc_form=args.icc_form,
        venn=tuple(r for r in args.venn.split(",") if r),
        cam=args.cam,
        registry=args.registry,
        options=_options(args),
    )
    _print_report(report.report(config), args.icc_form)
    return 0


def _print_report(result: report.ReportResult, icc_form: str = "ICC2") -> None:
    t = result.tables
    print(f"agreement of {len(result.raters)} raters ({', '.join(result.raters)}):")
    for row in t.agreement[t.agreement["subset"] == ALL_JOINTS].itertuples():
        print(
            f"    {row.rater} vs {row.reference}: n {row.n}, balanced accuracy {row.balanced_accuracy:.3f}, "
            f"+-1 balanced {row.pm1_balanced_accuracy:.3f}, quadratic kappa {row.kappa:.3f} "
            f"({row.kappa_low:.3f}-{row.kappa_high:.3f})"
        )
    icc = t.icc[(t.icc["subset"] == ALL_JOINTS) & (t.icc["form"] == icc_form)].iloc[0]
    if icc["note"]:
        print(f"    {icc_form}: {icc['note']}")
    else:
        print(
            f"    {icc_form} over all raters on {icc['n']} joints: {icc['value']:.3f} "
            f"({icc['low']:.3f}-{icc['high']:.3f}), {icc['label']}"
        )
    print(f"    report: {result.html}")


def _nightly(args: argparse.Namespace) -> int:
    from erosion.io import runtime  # Ray only where a command needs it
    from erosion.workflows import nightly

    config = nightly.NightlyConfig(_score_config(args), ratings=args.ratings, report_split=args.report_split)
    runtime.init_ray(args.address)
    result = nightly.nightly(config)
    m = result.manifest
    if not result.ran:
        print(f"run {m['run_id']} is committed already, with model {m['model_version'][:12]} and these inputs")
        print(f"    nothing to do: {result.run}")
        return 0
    print(
        f"night {m['run_id']}: {m['rows']} rows, {m['rows'] - m['failed'] - m['carried']} scored by model "
        f"{m['model_version'][:12]}, {m['carried']} carried over from {m['carried_from'] or 'no earlier run'}, "
        f"{m['failed']} failed; {m['visits']} visits; {m['seconds']['total']:.1f} s"
    )
    _print_report(result.report)
    print(f"    committed to {result.run}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    found = runs.committed(args.out, _options(args))
    print(f"{'run':22s} {'kind':8s} {'committed':25s} {'model':12s} {'rows':>9s} {'scored':>9s} {'carried':>9s} failed")
    for m in found:
        rows, carried, failed = m.get("rows", 0), m.get("carried", 0), m.get("failed", 0)
        print(
            f"{m.get('run_id', '?'):22s} {m.get('kind', '?'):8s} {m.get('committed_at', ''):25s} "
            f"{m.get('model_version', '')[:12]:12s} {rows:9d} {rows - failed - carried:9d} {carried:9d} {failed:6d}"
        )
    print(f"{len(found)} committed runs in {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    options = _options(args)
    predicted = evaluate.predict_split(args.model, args.registry, args.split, args.split_seed, options)
    references = {f"rater {args.rater}": evaluate.rater_reference(args.ratings, args.rater, options)}
    if args.truth:
        references["ground truth"] = evaluate.truth_reference(args.truth, options)
    print(f"{args.split} split, {len(predicted)} crops scored")
    for name, reference in references.items():
        a, _ = evaluate.compare(predicted, reference)
        pct = f", % MAE {a['pct_mae']:.1f}" if not math.isnan(a["pct_mae"]) else ""
        print(
            f"    vs {name}: n {a['n']}, accuracy {a['accuracy']:.3f}, balanced {a['balanced_accuracy']:.3f}, "
            f"+-1 balanced {a['pm1_balanced_accuracy']:.3f}, quadratic kappa {a['kappa']:.3f}{pct}"
        )
    return 0


def _benchmark_train(args: argparse.Namespace) -> int:
    from erosion.io import runtime  # Ray only where a command needs it
    from erosion.workflows import benchmark

    config = benchmark.TrainBenchConfig(
        registry=args.registry,
        out=args.out,
        model=ModelConfig(input_size=args.input_size, width=args.width),
        batch_size=args.batch_size,
        steps=args.steps,
        workers=args.workers,
        epochs=args.epochs,
        threads=args.threads,
        device=args.device,
    )
    runtime.init_ray()
    _print_figures(benchmark.train_throughput(config), args.json)
    return 0


def _benchmark_score(args: argparse.Namespace) -> int:
    from erosion.io import runtime  # Ray only where a command needs it
    from erosion.workflows import benchmark

    config = benchmark.ScoreBenchConfig(
        registry=args.registry,
        model=args.model,
        out=args.out,
        sizes=tuple(int(n) for n in args.sizes.split(",")),
        model_only_rows=args.model_only_rows,
        scoring={
            "batch_size": args.batch_size,
            "actors": args.actors,
            "gpus_per_actor": args.gpus_per_actor,
            "cpus_per_actor": args.cpus_per_actor,
        },
    )
    runtime.init_ray()
    _print_figures(benchmark.score_throughput(config), args.json)
    return 0


def _print_figures(figures: dict, json_url: str | None, indent: str = "") -> None:
    for key, value in figures.items():
        if isinstance(value, dict) and key != "setting":
            print(f"{indent}{key}:")
            _print_figures(value, None, indent + "    ")
        else:
            print(f"{indent}{key}: {value:.3f}" if isinstance(value, float) else f"{indent}{key}: {value}")
    if json_url:
        storage.write_json(json_url, figures)


def _validate(args: argparse.Namespace) -> int:
    reports = _check(args.registry, args.ratings, _options(args))
    problems = [p for r in reports for p in r.problems]
    for p in problems[:50]:
        where = f"{p.file} row {p.row}" if p.row is not None else p.file
        print(f"{p.table}: {where} [{p.key}] {p.column}: {p.reason}")
    if len(problems) > 50:
        print(f"... and {len(problems) - 50} more")
    if args.report:
        with storage.TableWriter(args.report, validate.PROBLEMS, options=_options(args)) as w:
            for report in reports:
                w.write(report.to_table())
    for name, r in zip(("registry", "ratings"), reports, strict=False):
        print(f"{name}: {r.rows} rows, {r.bad_rows} with problems")
    return 1 if problems else 0


def _check(registry: str, ratings: str | None, options: storage.StorageOptions) -> list[validate.Report]:
    report, ids = validate.validate_registry(registry, options)
    return [report] + ([validate.validate_ratings(ratings, ids, options)] if ratings else [])


def _demo(args: argparse.Namespace) -> int:
    from erosion.io import runtime  # Ray only where a command needs it
    from erosion.registry import summary
    from erosion.score import scoring
    from erosion.train import labelled, training

    out = args.out or tempfile.mkdtemp(prefix="erosion-demo-")
    print(f"1/5 synthetic registry: {args.patients} patients, seed {args.seed} -> {out}")
    manifest = synth.generate(synth.SynthConfig(patients=args.patients, out=out, seed=args.seed))
    rate = manifest["joints_per_second"]
    print(f"    {manifest['rows']['registry']} joints in {manifest['seconds']} s ({rate} joints/s)")
    reports = _check(f"{out}/registry", f"{out}/ratings", storage.StorageOptions())
    print("    validation: " + ", ".join(f"{r.rows} rows, {len(r.problems)} problems" for r in reports))
    if any(r.problems for r in reports):
        return 1
    print("2/5 summary on a local Ray (Ray Data)")
    runtime.init_ray(num_cpus=2)
    s = summary.summarize(f"{out}/registry", f"{out}/ratings", seed=args.seed)
    print(f"    joints {s.joints}, patients {s.patients}, visits {s.visits}")
    print("    class mix (registry rater): " + " / ".join(f"{100 * m:.1f}" for m in s.class_mix) + " %")
    for name in SPLITS:
        print(f"    {name:5s} {s.split_patients[name]:5d} patients {s.split_joints[name]:7d} joints")
    print(f"3/5 training on Ray Train, 2 CPU workers, {args.epochs} epochs: a reduced model (quarter width, 64x64)")
    config = training.TrainConfig(
        data=labelled.LabelSet(f"{out}/registry", f"{out}/ratings", split_seed=args.seed),
        out=f"{out}/runs",
        name="demo",
        epochs=args.epochs,
        batch_size=32,
        model=ModelConfig(input_size=64, width=0.25),
    )
    trained = training.train(config)
    _print_training(trained)
    print("4/5 scoring every crop of the registry with it on Ray Data (a pool of model actors)")
    scored = scoring.score(scoring.ScoreConfig(f"{out}/registry", trained.model, f"{out}/scores"))
    _print_scoring(scored)
    print("5/5 agreement report: the model as one more rater beside the simulated human raters")
    _print_report(report.report(report.ReportConfig(scores=scored.run, ratings=f"{out}/ratings")))
    print(f"done: everything is in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
