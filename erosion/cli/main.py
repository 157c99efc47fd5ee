"""The ``erosion`` command line: flags from the config dataclasses, a config per command, the library's result
printed (``erosion.workflows.printing``)."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence

from erosion.cli import flags
from erosion.io import leases, runs, storage
from erosion.registry import ingest, synth, validate
from erosion.report import embedding, queue, report, trends
from erosion.score import scoring
from erosion.train import evaluate, experiments, training
from erosion.workflows import benchmark, demo, nightly, printing

# What a run refuses or fails with on bad input or storage (a missing table, a wrong schema, an unreachable or
# refusing S3, another run holding the output folder): said in one line, no traceback unless --verbose.
REFUSALS = (*storage.ERRORS, ValueError, leases.Held, scoring.RunFailed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``erosion`` sub-command; returns the process exit code (1 where it refused or failed)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("erosion").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.run(args)
    except REFUSALS as error:
        if args.verbose:
            raise
        print(f"erosion {args.command}: error: {error}\n(--verbose shows the traceback)", file=sys.stderr)
        return 1


def parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command: the flags of its config, and what only the command line has."""
    top = argparse.ArgumentParser(prog="erosion", description=__doc__)
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    for name, (text, config, job, ray) in _COMMANDS.items():
        p = commands.add_parser(name, help=text, description=text)
        flags.add(p, config)
        if ray:
            p.add_argument("--address", help="a Ray cluster to join (default: $RAY_ADDRESS or a local Ray)")
        p.add_argument("--verbose", action="store_true", help="Ray's own logs and progress bars on the terminal too")
        p.set_defaults(run=functools.partial(_run, job, config, ray), command=name)
    for name in ("synth", "ingest"):
        flags.add(commands.choices[name], storage.StorageOptions)
    commands.choices["experiment"].add_argument("kind", choices=experiments.KINDS, help=experiments.KINDS_HELP)
    commands.choices["runs"].add_argument("--out", required=True, help="the folder the runs were committed to")
    commands.choices["runs"].add_argument("--html", help="also write runs.html here: the nights' monitoring figures")
    return top


def _stored(args: argparse.Namespace) -> storage.StorageOptions:
    return flags.build(storage.StorageOptions, args)


# name: (help, config, job(config, args) -> text to print or (text, exit code), whether it runs on Ray)
_COMMANDS: dict[str, tuple[str, type, Callable, bool]] = {
    "synth": ("write a synthetic registry with ratings and ground truth", synth.SynthConfig,
              lambda c, args: printing.synthesized(synth.generate(c, _stored(args)), c.out), False),
    "ingest": ("turn a CSV of labels and a folder of crops into a registry", ingest.IngestConfig,
               lambda c, args: printing.ingested(ingest.ingest(c, _stored(args)), c.out), False),
    "validate": ("check a registry and its ratings against the contracts", validate.ValidateConfig,
                 lambda c, _: _validate(c), False),
    "train": ("train the CNN or VGG16 on Ray Train (resumes a run of the same --name)", training.TrainConfig,
              lambda c, _: printing.trained(training.train(c)), True),
    "experiment": ("the paper's experiments: variants trained and compared on one split",
                   experiments.ExperimentConfig, lambda c, args: _experiment(c, args.kind), True),
    "evaluate": ("a trained model's accuracies on one split (plain process, no Ray)", evaluate.EvaluateConfig,
                 lambda c, _: printing.evaluation(c.split, *evaluate.evaluate(c)), False),
    "score": ("score a registry with a trained model on Ray Data; scores and Rau scores", scoring.ScoreConfig,
              lambda c, _: printing.scoring(scoring.score(c)), True),
    "report": ("agreement of the model with each human rater: Parquet, plots, HTML", report.ReportConfig,
               lambda c, _: printing.report(report.report(c), c.icc_form), False),
    "review": ("a review queue of the ratings the model disagrees with most; resolves re-rated ones",
               queue.ReviewConfig, lambda c, _: printing.reviewed(queue.queue(c)), False),
    "embed": ("a run's embeddings as a t-SNE map by stage, and each joint's nearest rated neighbours",
              embedding.EmbedConfig, lambda c, _: printing.embedded(embedding.map_embedding(c)), False),
    "nightly": ("one dated run: score (carrying unchanged joints over), Rau, report", nightly.NightlyConfig,
                lambda c, _: _nightly(c), True),
    "runs": ("the committed runs under a folder, with their counts", storage.StorageOptions,
             lambda c, args: _runs(args.out, args.html, c), False),
    "benchmark-train": ("training throughput: bare step, augmented step, Ray Train", benchmark.TrainBenchConfig,
                        lambda c, _: printing.figures(benchmark.train_throughput(c)), True),
    "benchmark-score": ("scoring throughput: end to end, model only, decode only, naive", benchmark.ScoreBenchConfig,
                        lambda c, _: printing.figures(benchmark.score_throughput(c)), True),
    "benchmark-nightly": ("nights on a sized registry: first, unchanged, one file changed, two at once",
                          benchmark.NightsBenchConfig, lambda c, _: printing.figures(benchmark.nights(c)), True),
    "demo": ("the whole job on a synthetic registry and a local Ray", demo.DemoConfig,
             lambda c, args: ("", 0 if demo.demo(c, verbose=args.verbose) else 1), False),
}  # fmt: skip


def _run(job: Callable, config: type, ray: bool, args: argparse.Namespace) -> int:
    """Join or start Ray where the command needs it, run the job, print what it says; the exit code."""
    if ray:
        from erosion.io import runtime  # Ray started only where a command needs it

        runtime.init_ray(args.address, verbose=args.verbose)
    said = job(flags.build(config, args), args)
    text, code = said if isinstance(said, tuple) else (said, 0)
    if text:
        print(text)
    return code


def _validate(config: validate.ValidateConfig) -> tuple[str, int]:
    reports = validate.validate(config)
    return printing.validation(reports), 1 if any(r.problems for r in reports) else 0


def _runs(out: str, folder: str | None, options: storage.StorageOptions) -> str:
    text = printing.runs(runs.committed(out, options), out)
    return f"{text}\nmonitoring across nights: {trends.write(out, folder, options)}" if folder else text


def _nightly(config: nightly.NightlyConfig) -> tuple[str, int]:
    """The night's summary; exit code 3 where it raised an alert and --fail-on-alert asks for it (committed)."""
    result = nightly.nightly(config)
    return printing.nightly(result), 3 if config.fail_on_alert and result.manifest.alerts else 0


def _experiment(config: experiments.ExperimentConfig, kind: str) -> str:
    table, confusion = experiments.compare(config, experiments.variants(kind, config))
    experiments.write(config.base.out, table, confusion, config.base.data.options)
    data = config.base.data
    return (
        f"{kind} experiment on split seed {data.split_seed}, labels of rater {data.rater}:\n"
        + experiments.models(table)
        + "\n"
        + experiments.markdown(table)
        + f"tables and plots in {config.base.out}"
    )


if __name__ == "__main__":
    sys.exit(main())
