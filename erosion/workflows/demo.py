"""The whole job on a synthetic registry and a local Ray: synth, validate, summary, train, score, report."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from erosion.core.settings import setting
from erosion.io import runtime
from erosion.model.network import ModelConfig
from erosion.registry import summary, synth, validate
from erosion.report import report
from erosion.score import scoring
from erosion.train import labelled, training
from erosion.workflows import printing

DEMO_MODEL = ModelConfig(input_size=64, width=0.25)  # a reduced model that trains in seconds an epoch on a CPU


@dataclass(frozen=True)
class DemoConfig:
    """How big a synthetic registry, how long to train, where it all goes."""

    patients: int = setting(
        "patients of the synthetic registry (the reduced model needs some 150 to learn stages 0 and 1 apart)", 150
    )
    seed: int = setting("seed of the registry and of the patient split", 0)
    out: str = setting("where everything goes (default: a new temporary folder)", "")
    epochs: int = setting("at most this many training epochs of the reduced model (the recipe may stop sooner)", 24)


def demo(config: DemoConfig, say: Callable[[str], None] = print, verbose: bool = False) -> bool:
    """Run every stage in turn, telling ``say`` what each did; False if the synthetic registry fails validation.
    ``verbose``: Ray's own logs on the terminal too."""
    out = config.out or tempfile.mkdtemp(prefix="erosion-demo-")
    say(f"1/5 synthetic registry: {config.patients} patients, seed {config.seed} -> {out}")
    made = synth.generate(synth.SynthConfig(patients=config.patients, out=out, seed=config.seed))
    say("    " + printing.synthesized(made, out))
    reports = validate.validate(validate.ValidateConfig(f"{out}/registry", f"{out}/ratings"))
    say("    validation: " + ", ".join(f"{r.rows} rows, {len(r.problems)} problems" for r in reports))
    if any(r.problems for r in reports):
        return False
    say("2/5 summary on a local Ray (Ray Data)")
    runtime.init_ray(num_cpus=2, verbose=verbose)
    say(printing.summary(summary.summarize(f"{out}/registry", f"{out}/ratings", seed=config.seed)))
    model = "a reduced model (64x64, quarter width)"
    say(f"3/5 training on Ray Train, 2 CPU workers, up to {config.epochs} epochs: {model}")
    trained = training.train(
        training.TrainConfig(
            data=labelled.LabelSet(f"{out}/registry", f"{out}/ratings", split_seed=config.seed),
            out=f"{out}/runs",
            name="demo",
            epochs=config.epochs,
            model=DEMO_MODEL,
        )
    )
    say(printing.trained(trained))
    say("4/5 scoring every crop of the registry with it on Ray Data (a pool of model actors)")
    scored = scoring.score(scoring.ScoreConfig(f"{out}/registry", trained.model, f"{out}/scores"))
    say(printing.scoring(scored))
    say("5/5 agreement report: the model as one more rater beside the simulated human raters")
    reported = report.report(
        report.ReportConfig(scores=scored.run, ratings=f"{out}/ratings", activity=f"{out}/activity")
    )  # with Rau against the synthetic registry's DAS28
    say(printing.report(reported))
    say(f"done: everything is in {out}")
    return True
