"""The ``erosion`` command line: flags from the config dataclasses, a config per command, the library's result
printed (``erosion.workflows.printing``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from erosion.cli import flags
from erosion.io import runs, storage
from erosion.registry import ingest, synth, validate
from erosion.report import report
from erosion.score import scoring
from erosion.train import evaluate, experiments, training
from erosion.workflows import benchmark, demo, nightly, printing


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``erosion`` sub-command; returns the process exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("erosion").setLevel(logging.INFO if args.verbose else logging.WARNING)
    return args.run(args)


def parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    top = argparse.ArgumentParser(prog="erosion", description=__doc__)
    commands = top.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, text: str, run: Callable, *configs: type, ray: bool = False) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=text, description=text)
        for config in configs:
            flags.add(p, config)
        if ray:
            p.add_argument(
                "--address", default=None, help="a Ray cluster to join (default: $RAY_ADDRESS or a local Ray)"
            )
        p.add_argument("--verbose", action="store_true", help="Ray's own logs and progress bars on the terminal too")
        p.set_defaults(run=run)
        return p

    command(
        "synth",
        "write a synthetic registry with ratings and ground truth",
        _synth,
        synth.SynthConfig,
        storage.StorageOptions,
    )
    command(
        "ingest",
        "turn a CSV of labels and a folder of crops into a registry",
        _ingest,
        ingest.IngestConfig,
        storage.StorageOptions,
    )
    command("validate", "check a registry and its ratings against the contracts", _validate, validate.ValidateConfig)
    command(
        "train",
        "train the CNN or VGG16 on Ray Train (resumes a run of the same --name)",
        _train,
        training.TrainConfig,
        ray=True,
    )
    p = command(
        "experiment",
        "the paper's experiments: variants trained and compared on one split",
        _experiment,
        experiments.ExperimentConfig,
        ray=True,
    )
    p.add_argument(
        "kind",
        choices=experiments.KINDS,
        help="loss: unweighted vs class-weighted (Table 2); head: classifier vs CDF head; all: both and VGG16",
    )
    command(
        "evaluate",
        "a trained model's accuracies on one split (plain process, no Ray)",
        _evaluate,
        evaluate.EvaluateConfig,
    )
    command(
        "score",
        "score a registry with a trained model on Ray Data; scores and Rau scores",
        _score,
        scoring.ScoreConfig,
        ray=True,
    )
    command(
        "report", "agreement of the model with each human rater: Parquet, plots, HTML", _report, report.ReportConfig
    )
    command(
        "nightly",
        "one dated run: score (carrying unchanged joints over), Rau, report",
        _nightly,
        nightly.NightlyConfig,
        ray=True,
    )
    p = command("runs", "the committed runs under a folder, with their counts", _runs, storage.StorageOptions)
    p.add_argument("--out", required=True, help="the folder the runs were committed to")
    command(
        "benchmark-train",
        "training throughput: bare step, augmented step, Ray Train",
        _benchmark_train,
        benchmark.TrainBenchConfig,
        ray=True,
    )
    command(
        "benchmark-score",
        "scoring throughput: end to end, model only, decode only, naive",
        _benchmark_score,
        benchmark.ScoreBenchConfig,
        ray=True,
    )
    command("demo", "the whole job on a synthetic registry and a local Ray", _demo, demo.DemoConfig)
    return top


def _ray(args: argparse.Namespace) -> None:
    from erosion.io import runtime  # Ray only where a command needs it

    runtime.init_ray(args.address, verbose=args.verbose)


def _synth(args: argparse.Namespace) -> int:
    config = flags.build(synth.SynthConfig, args)
    print(printing.synthesized(synth.generate(config, flags.build(storage.StorageOptions, args)), config.out))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    config = flags.build(ingest.IngestConfig, args)
    print(printing.ingested(ingest.ingest(config, flags.build(storage.StorageOptions, args)), config.out))
    return 0


def _validate(args: argparse.Namespace) -> int:
    reports = validate.validate(flags.build(validate.ValidateConfig, args))
    print(printing.validation(reports))
    return 1 if any(r.problems for r in reports) else 0


def _train(args: argparse.Namespace) -> int:
    _ray(args)
    print(printing.trained(training.train(flags.build(training.TrainConfig, args))))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    config = flags.build(experiments.ExperimentConfig, args)
    _ray(args)
    table, confusion = experiments.compare(config, experiments.variants(args.kind, config))
    experiments.write(config.base.out, table, confusion, config.base.data.options)
    print(
        f"{args.kind} experiment on split seed {config.base.data.split_seed}, labels of rater {config.base.data.rater}:"
    )
    print(experiments.models(table) + "\n" + experiments.markdown(table), end="")
    print(f"tables and plots in {config.base.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    config = flags.build(evaluate.EvaluateConfig, args)
    print(printing.evaluation(config.split, *evaluate.evaluate(config)))
    return 0


def _score(args: argparse.Namespace) -> int:
    _ray(args)
    print(printing.scoring(scoring.score(flags.build(scoring.ScoreConfig, args))))
    return 0


def _report(args: argparse.Namespace) -> int:
    config = flags.build(report.ReportConfig, args)
    print(printing.report(report.report(config), config.icc_form))
    return 0


def _nightly(args: argparse.Namespace) -> int:
    _ray(args)
    print(printing.nightly(nightly.nightly(flags.build(nightly.NightlyConfig, args))))
    return 0


def _runs(args: argparse.Namespace) -> int:
    print(printing.runs(runs.committed(args.out, flags.build(storage.StorageOptions, args)), args.out))
    return 0


def _benchmark_train(args: argparse.Namespace) -> int:
    _ray(args)
    print(printing.figures(benchmark.train_throughput(flags.build(benchmark.TrainBenchConfig, args))))
    return 0


def _benchmark_score(args: argparse.Namespace) -> int:
    _ray(args)
    print(printing.figures(benchmark.score_throughput(flags.build(benchmark.ScoreBenchConfig, args))))
    return 0


def _demo(args: argparse.Namespace) -> int:
    return 0 if demo.demo(flags.build(demo.DemoConfig, args), verbose=args.verbose) else 1


if __name__ == "__main__":
    sys.exit(main())
