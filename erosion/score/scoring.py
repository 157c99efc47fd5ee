"""Score a whole registry with a trained model on Ray Data; every registry row comes out exactly once.

The pipeline streams: read the registry's Parquet (local or ``s3://``, the key columns and the image) ->
check and decode each crop in CPU tasks (``preprocess.letterbox``, the function training used), pixels as
fixed-size binary so that no per-row Python touches them again -> a pool of model actors (``map_batches``
with a callable class and ``ActorPoolStrategy``, the model loaded once per actor, on a GPU when the actor has
one) -> Parquet in the scores contract (``schema.SCORES``). A row whose crop cannot be scored (an unknown
joint, a missing key, an empty, corrupt, truncated or unsupported image) keeps its keys and gets an ``error``
(``erosion.score.decoding``, which keeps torch out of the decode workers).

The scores go to the run's attempt folder (``runs.begin``, which takes the output folder's lease). The driver
then counts the rows written against the registry's (from the Parquet footers), streams the scores' compact
columns once for the per-visit Rau scores and the error counts, and commits the run with its manifest
(``Attempt.commit``). A run that fails or is killed commits nothing; a row count that does not add up fails the
run. An empty registry gives a committed run with an empty scores table and an empty Rau table.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from erosion.core import domain, rau, schema
from erosion.core.faults import Faults
from erosion.core.settings import setting
from erosion.io import datasets, heap, leases, runs, storage
from erosion.model import augment, calibration, checkpoint, models
from erosion.model.network import for_inference, predict, predict_embedded
from erosion.score import carry, decoding, embeddings, tasks

EXAMPLES = 20  # failed rows named in the result (all of them are in the scores)


class RunFailed(RuntimeError):
    """The pipeline failed (storage gone mid-run, a worker that kept dying): nothing was committed."""


@dataclass(frozen=True)
class ScoreConfig:
    """One scoring run."""

    registry: str = setting("the registry table (local folder or s3:// URL)")
    model: str = setting(
        "a checkpoint or training run folder (erosion train's <out>/<name>): it scores the body parts its card"
        " names; or one model per body part: body_part=RUN, repeated, or a JSON file mapping body parts to runs",
        repeat=True,
    )
    out: str = setting("runs are committed to <out>/<run_id>/")
    run_id: str = setting(
        "the run's folder name (default: the start time, UTC, e.g. 20261123T020000Z; nightly: the date)", ""
    )
    batch_size: int = setting("crops per model call", 256)
    actors: int = setting("model actors", 1)
    gpus_per_actor: float = setting("> 0: each actor scores on a GPU (bf16 autocast, channels-last)", 0.0)
    cpus_per_actor: float = setting("on a small machine, leave CPUs for the read and decode tasks", 0.5)
    decode_cpus: float = setting(
        "CPUs per decode task: decoding is CPU-bound, so more tasks at once than cores only contend", 1.0
    )
    options: storage.StorageOptions = setting("S3 settings", factory=storage.StorageOptions)
    carry_from: str = setting(
        "an earlier committed run: its scores of unchanged joints are carried over (same model)", ""
    )
    tta: int = setting("> 0: the mean probabilities over this many fixed augmented views of each crop (seeded)", 0)
    tta_seed: int = setting("the seed the views are drawn from", 0)
    embeddings: bool = setting(
        "also write each crop's penultimate-layer embedding (float16) to <run>/embeddings/: the crops this run's"
        " model scored (not carried over, not failed)",
        False,
    )
    lease_seconds: float = setting(
        "how long a run that was killed keeps others out of --out (the lease is renewed while it runs)",
        leases.SECONDS,
    )
    faults: Faults = setting("faults injected by tests; never recorded", factory=Faults, cli=False)


@dataclass(frozen=True)
class ScoreResult:
    """What a committed run holds and how it went."""

    run: str  # <out>/<run_id>
    run_id: str
    model_version: str
    rows: int  # registry rows = score rows
    scored: int
    failed: int
    errors: dict[str, int]  # failed rows by reason
    examples: list[tuple[str, str]]  # (joint_id, error) of the first failed rows
    visits: int  # rows of the Rau table
    seconds: float
    carried: int = 0  # rows whose score was carried over from config.carry_from, not scored again
    manifest: runs.RunManifest | None = None  # what the run's manifest.json says

    @property
    def crops_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def score(config: ScoreConfig) -> ScoreResult:
    """Score the registry, write scores and Rau scores, commit the run; Ray must be initialised."""
    run_id = config.run_id or datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    storage.reach(config.registry, config.out, options=config.options)
    inputs = check_registry(config.registry, config.options)
    with runs.begin(config.out, run_id, config.options, config.lease_seconds) as attempt:
        result = score_into(config, attempt, inputs)
        committed = attempt.commit(result.manifest)
    return dataclasses.replace(result, run=committed.run, manifest=committed)


def score_into(config: ScoreConfig, attempt: runs.Attempt, inputs: dict[str, dict]) -> ScoreResult:
    """Score the registry (``inputs``: its snapshot, ``check_registry``) into the attempt's ``scores`` and
    ``rau``; the caller commits the attempt. Files unchanged since ``config.carry_from`` are not read."""
    began = time.monotonic()
    run_id = attempt.run_id
    chosen = models.resolve(config.model, config.options)
    earlier = _carry_from(config, chosen.version)
    complete = carry.complete_files(earlier.path("scores"), config.options) if earlier else {}
    unchanged = {
        file
        for file, state in inputs.items()
        if earlier and earlier.inputs.get(file) == state and complete.get(file) == state["rows"]
    }
    read = [file for file in inputs if file not in unchanged]

    expected = sum(state["rows"] for state in inputs.values())
    scores_url, embeddings_url = f"{attempt.url}/scores", f"{attempt.url}/embeddings"
    if config.embeddings:  # the table exists also where no row is embedded (every file carried, an empty registry)
        embeddings.empty(embeddings_url, embeddings.width(chosen), config.options)
    if unchanged:  # their rows copied from the earlier run, first (Ray Data appends): no image of theirs is read
        carry.copy(earlier.path("scores"), unchanged, run_id, scores_url, config.options)
    if any(inputs[file]["rows"] for file in read):
        lookup = ray.put(carry.load(earlier.path("scores"), config.options)) if earlier else None
        scores = pipeline(config, run_id, chosen, lookup, read)
        fs, path = storage.arrow_filesystem(scores_url, config.options)
        try:
            if config.embeddings:
                width = embeddings.width(chosen)
                scores.write_datasink(embeddings.Sink(scores_url, embeddings_url, width, config.options))
            else:
                scores.write_parquet(path, filesystem=fs)
        except Exception as error:  # a Ray task error holds a remote traceback: its cause's first line says why
            cause = str(getattr(error, "cause", None) or error).strip().splitlines()[0]
            raise RunFailed(f"run {run_id}: scoring failed, nothing was committed: {cause}") from error
    elif not unchanged:  # nothing to score: the run still holds a scores table, empty
        storage.TableWriter(scores_url, schema.SCORES, options=config.options).close()

    written = sum(storage.row_counts(scores_url, config.options).values())
    if written != expected:
        raise RuntimeError(f"run {run_id}: {written} score rows for {expected} registry rows; not committed.")
    visits, errors, examples, carried = _summarise(scores_url, run_id, config.options)
    with storage.TableWriter(f"{attempt.url}/rau", rau.SCHEMA, options=config.options) as writer:
        writer.write(visits)
    failed = sum(errors.values())
    embedded = _count_embedded(config, embeddings_url, expected - failed - carried)
    seconds = time.monotonic() - began
    manifest = runs.RunManifest(
        kind="score",
        run_id=run_id,
        committed_at=runs.now(),
        rows={
            "total": expected,
            "scored": expected - failed,
            "failed": failed,
            "carried": carried,
            "visits": visits.num_rows,
            "files_read": len(read),
            "files_carried": len(unchanged),
            "rows_read": sum(inputs[file]["rows"] for file in read),
            "bytes_read": sum(inputs[file]["bytes"] for file in read),  # registry files read for their images
        }
        | ({"embedded": embedded} if config.embeddings else {}),
        seconds={"total": round(seconds, 3)},
        config={k: v for k, v in dataclasses.asdict(config).items() if k != "faults"} | {"run_id": run_id},
        model=config.model,
        model_version=chosen.version,
        models=chosen.described(),
        model_epoch=next(iter(chosen.cards.values())).epoch if len(chosen.cards) == 1 else -1,
        registry=config.registry,
        input_rows={file: state["rows"] for file, state in inputs.items()},
        inputs=inputs,
        carried_from=earlier.run_id if earlier else None,
        errors=errors,
        outputs={"scores": attempt.output("scores/"), "rau": attempt.output("rau/")}
        | ({"embeddings": attempt.output("embeddings/")} if config.embeddings else {}),
        versions=_versions(),
        run=attempt.run,
    )
    return ScoreResult(
        run=attempt.run,
        run_id=run_id,
        model_version=chosen.version,
        rows=expected,
        scored=expected - failed,
        failed=failed,
        errors=errors,
        examples=examples,
        visits=visits.num_rows,
        seconds=seconds,
        carried=carried,
        manifest=manifest,
    )


def pipeline(
    config: ScoreConfig,
    run_id: str,
    chosen: models.Models,
    carry: ray.ObjectRef | None = None,
    files: list[str] | None = None,
) -> ray.data.Dataset:
    """The lazy Ray Data plan: registry (``files`` of it, if given) -> checked, decoded crops -> model actors (each
    body part's ``chosen`` model) -> rows of ``schema.SCORES``."""
    columns = [*schema.KEYS, "image", "path"]
    rows = datasets.read(config.registry, columns, config.options, files, cpus=config.decode_cpus)
    crops = tasks.scoring_crops(
        rows,
        chosen.input_size,
        chosen.coverage(),
        config.decode_cpus,
        config.faults.crash_decode_once,
        carry,
    )
    return model_scores(crops, config, run_id, chosen)


def model_scores(crops: ray.data.Dataset, config: ScoreConfig, run_id: str, chosen: models.Models) -> ray.data.Dataset:
    """Decoded crops through a pool of model actors: rows of ``schema.SCORES``."""
    return crops.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "parts": chosen.parts,
            "version": chosen.version,
            "run_id": run_id,
            "device": "cuda" if config.gpus_per_actor > 0 else "cpu",
            "options": config.options,
            "views": augment.views(config.tta, seed=config.tta_seed) if config.tta else None,
            "crash_once": config.faults.crash_model_once,
            "width": embeddings.width(chosen) if config.embeddings else 0,
        },
        batch_size=config.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=config.actors, max_size=config.actors),
        num_gpus=config.gpus_per_actor,
        num_cpus=config.cpus_per_actor,
    )


class Scorer:
    """A model actor: loads each body part's model (``Model``) once, then turns batches of decoded crops into score
    rows, each joint scored by its body part's model: calibrated probabilities, the model's own stage, whether
    the patient is in-sample, the model's version."""

    def __init__(
        self,
        parts: dict[str, str],
        version: str,
        run_id: str,
        device: str,
        options: storage.StorageOptions,
        views: torch.Tensor | None = None,
        crash_once: str | None = None,
        width: int = 0,
    ) -> None:
        heap.keep_freed_memory()
        embed = width > 0
        loaded = {folder: Model(folder, device, options, views, embed) for folder in dict.fromkeys(parts.values())}
        self.models = {part: loaded[folder] for part, folder in parts.items()}
        self.crash_once = crash_once  # tests: the first call to find this marker file missing kills the actor
        self.size = next(iter(loaded.values())).size
        self.run_id, self.version, self.width = run_id, version, width

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.crash_once and not os.path.exists(self.crash_once):
            open(self.crash_once, "w").close()
            os._exit(1)  # as an actor lost mid-batch (its node gone, out of memory) would
        carried = pc.is_valid(batch["carried"]).to_numpy(zero_copy_only=False)
        ok = pc.is_null(batch["error"]).to_numpy(zero_copy_only=False) & ~carried
        scored = np.full((batch.num_rows, schema.SCORE_WIDTH), np.nan, dtype=np.float32)
        embedded = np.zeros((batch.num_rows, self.width), np.float16)
        folds = np.full(batch.num_rows, -1)
        parts = np.asarray(batch["body_part"].to_pylist(), dtype=object)
        if ok.any():
            pixels = decoding.pixel_view(batch["pixels"], self.size)
            patients = np.asarray(batch["patient_id"].to_pylist(), dtype=object)
            for part, model in self.models.items():  # decoding left no row of a body part without a model ok
                rows = ok & (parts == part)
                if rows.any():
                    scored[rows], embedded_rows, folds[rows] = model.score(pixels[rows], patients[rows])
                    if self.width:
                        embedded[rows] = embedded_rows
            measured = batch["crop"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
            scored[ok, schema.SCORE_CROP] = measured.reshape(-1, len(schema.CROP))[ok]
        if carried.any():
            flat = batch["carried"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
            scored[carried] = flat.reshape(-1, schema.SCORE_WIDTH)
        versions = [self.models[p].version if p in self.models else self.version for p in parts]
        rows = score_rows(batch, scored, self.run_id, versions)
        return embeddings.attach(rows, embedded, folds, ok) if self.width else rows


class Model:
    """One body part's model in a scoring actor: a trained model, or a fold set's fold models.

    A fold set scores each joint with the fold model that never saw its patient, and a joint of a patient no
    fold model saw (a new patient) with the mean over the fold models, their spread beside it.
    """

    def __init__(
        self, folder: str, device: str, options: storage.StorageOptions, views: torch.Tensor | None, embed: bool
    ) -> None:
        members = checkpoint.load_members(folder, device, options)
        self.members = [(for_inference(network), card.calibration) for network, card in members]
        card = checkpoint.read_card(folder, options)
        self.views, self.embed = views, embed
        self.size = checkpoint.prepared(card)["input_size"]
        self.version = card.model_version
        self.patients = _patient_folds(checkpoint.read_patients(folder, options))

    def score(self, pixels: np.ndarray, patients: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(N, SCORE_WIDTH) scores of crops of these patients; where the run embeds, their (N, width) float16
        embeddings (else None) and the fold model that made each (-1: a single model; a fold set's new patient:
        fold 0's, whose space it then shares)."""
        if len(self.members) == 1:
            network, calibrated = self.members[0]
            predictions, embedded = self._predict(network, pixels)
            scored = _scored(predictions, calibrated)
            if self.patients is not None:
                scored[:, schema.SCORE_IN_SAMPLE] = self.patients.index.get_indexer(patients) >= 0
            return scored, embedded, np.full(len(pixels), -1)
        folds = self._folds(patients)
        scored = np.full((len(pixels), schema.SCORE_WIDTH), np.nan, dtype=np.float32)
        embedded = np.zeros((len(pixels), self.members[0][0].embedding_width), np.float16) if self.embed else None
        for fold, (network, calibrated) in enumerate(self.members):
            rows = folds == fold
            if rows.any():
                predictions, embedded_rows = self._predict(network, pixels[rows])
                scored[rows] = _scored(predictions, calibrated)
                if self.embed:
                    embedded[rows] = embedded_rows
        new = folds < 0
        if new.any():
            each = [self._predict(m, pixels[new]) for m, _ in self.members]
            scored[new] = _mean([_scored(p, c) for (p, _), (_, c) in zip(each, self.members, strict=True)])
            if self.embed:
                embedded[new] = each[0][1]
        scored[:, schema.SCORE_IN_SAMPLE] = 0.0  # no fold model saw the patient of the joint it scored
        return scored, embedded, np.maximum(folds, 0)

    def _predict(self, network: torch.nn.Module, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A member's (N, 7) predictions of the crops, and their embeddings where the run embeds."""
        if self.embed:
            return predict_embedded(network, pixels, self.views)
        return predict(network, pixels, self.views), None

    def _folds(self, patients: np.ndarray) -> np.ndarray:
        """Each patient's fold (-1: a patient the fold set never saw, or no patients table)."""
        if self.patients is None:
            return np.full(len(patients), -1)
        position = self.patients.index.get_indexer(patients)
        return np.where(position >= 0, self.patients.to_numpy()[np.maximum(position, 0)], -1)


def _patient_folds(patients: pa.Table | None) -> pd.Series | None:
    """patient_id -> fold (-1 for a single model's patients), from a model's patients table."""
    if patients is None:
        return None
    folds = patients["fold"].to_numpy() if "fold" in patients.column_names else np.full(patients.num_rows, -1)
    return pd.Series(folds, index=pd.Index(patients["patient_id"].to_pylist(), dtype=object))


def _scored(predictions: np.ndarray, calibrated: dict | None) -> np.ndarray:
    """(N, SCORE_WIDTH) from a model's (N, 7) predictions: probabilities calibrated with the model's calibration
    (``calibration.apply``) where it has one, its own argmax stage, no spread, in-sample unknown."""
    scored = np.full((len(predictions), schema.SCORE_WIDTH), np.nan, dtype=np.float32)
    scored[:, : schema.PREDICTION_WIDTH] = predictions
    raw = predictions[:, schema.PREDICTION_PROBS]
    if calibrated:
        scored[:, schema.PREDICTION_PROBS] = calibration.apply(raw, calibrated["temperature"], calibrated["shift"])
    scored[:, schema.SCORE_STAGE] = raw.argmax(1)
    return scored


def _mean(members: list[np.ndarray]) -> np.ndarray:
    """The fold models' scores of the same crops as one: mean probabilities and %, the stage of the mean, the
    standard deviation of the expected stage over the models as the spread."""
    stacked = np.stack(members)
    scored = stacked.mean(axis=0)
    scored[:, schema.SCORE_STAGE] = scored[:, schema.PREDICTION_PROBS].argmax(1)
    expected = stacked[:, :, schema.PREDICTION_PROBS] @ np.arange(domain.NUM_STAGES, dtype=np.float32)
    scored[:, schema.SCORE_SPREAD] = expected.std(axis=0)
    return scored


def score_rows(batch: pa.Table, scored: np.ndarray, run_id: str, versions: list[str]) -> pa.Table:
    """Rows of ``schema.SCORES`` from a batch's keys and errors, its (N, SCORE_WIDTH) scores and each row's model
    version."""
    failed = pc.is_valid(batch["error"])
    mask = failed.to_numpy(zero_copy_only=False)
    n = batch.num_rows
    probs = np.nan_to_num(scored[:, schema.PREDICTION_PROBS])  # a failed row's are masked
    pct = scored[:, schema.PREDICTION_PCT]
    no_pct = mask | np.isnan(pct)
    stage_of_pct = domain.ratingen_stage(np.clip(np.where(no_pct, 0.0, pct), 0.0, 100.0))
    stage = np.nan_to_num(scored[:, schema.SCORE_STAGE]).astype(np.int8)
    spread, in_sample = scored[:, schema.SCORE_SPREAD], scored[:, schema.SCORE_IN_SAMPLE]
    columns = [batch[k] for k in schema.KEYS] + [
        pa.array([run_id] * n, pa.string()),
        pa.array(versions, pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), domain.NUM_STAGES, mask=pa.array(mask)),
        pa.array(stage, mask=mask),
        pa.array((probs @ np.arange(domain.NUM_STAGES, dtype=np.float32)).astype(np.float32), mask=mask),
        pa.array(pct.astype(np.float32), mask=no_pct),
        pa.array(np.asarray(stage_of_pct, dtype=np.int8), mask=no_pct),
        batch["error"],
        batch["fingerprint"],
        pc.is_valid(batch["carried"]),
        batch["source_file"],
        pa.array(in_sample == 1, mask=np.isnan(in_sample) | mask),
        pa.array(spread.astype(np.float32), mask=np.isnan(spread) | mask),
        schema.crop_column(np.where(mask[:, None], np.nan, scored[:, schema.SCORE_CROP])),
    ]
    return pa.Table.from_arrays(columns, schema=schema.SCORES)


def check_registry(url: str, options: storage.StorageOptions) -> dict[str, dict]:
    """The registry's snapshot (``storage.snapshot``: each file's rows, bytes, version and footer); ValueError
    naming every file that is not Parquet or whose schema is not the registry contract's, FileNotFoundError for
    a folder without Parquet files: before anything is written."""
    metadata = storage.footers(url, options)
    problems = [
        f"{file}: {reason}"
        for file, meta in metadata.items()
        for _, reason in schema.schema_problems(meta.schema.to_arrow_schema(), schema.REGISTRY)
    ]
    if problems:
        raise ValueError("the registry does not match the contract, nothing was scored:\n  " + "\n  ".join(problems))
    return storage.snapshot(url, options, metadata)


def _carry_from(config: ScoreConfig, model_version: str) -> runs.RunManifest | None:
    """The earlier run whose scores can be carried over; None where there is none or nothing can be carried."""
    if not config.carry_from:
        return None
    earlier = runs.manifest(config.carry_from, config.options)
    settings = earlier.config
    same_tta = (settings.get("tta", 0), settings.get("tta_seed", 0)) == (config.tta, config.tta_seed)
    if earlier.model_version != model_version or not same_tta:
        return None  # a new model (or other test-time views) scores everything anew
    return earlier


def _count_embedded(config: ScoreConfig, url: str, fresh: int) -> int:
    """The rows of the run's embeddings table (0 without ``--embeddings``); RuntimeError unless every row the
    run's model scored (``fresh``: not failed, not carried) has one."""
    if not config.embeddings:
        return 0
    embedded = sum(storage.row_counts(url, config.options).values())
    if embedded != fresh:
        raise RuntimeError(f"{embedded} embeddings for {fresh} rows scored by the model; not committed.")
    return embedded


def _summarise(scores: str, run_id: str, options: storage.StorageOptions) -> tuple[pa.Table, dict[str, int], list, int]:
    """One pass over the written scores: the Rau table, failed rows by reason, the first failed rows, carried rows."""
    partials, errors, examples, carried = [], collections.Counter(), [], 0
    for _, _, batch in storage.iter_batches(scores, [*rau.COLUMNS, "joint_id", "carried"], 65_536, options):
        table = pa.Table.from_batches([batch])
        carried += pc.sum(table["carried"]).as_py() or 0
        partials.append(rau.partial(table))
        failed = table.filter(pc.is_valid(table["error"]))
        for joint_id, error in zip(failed["joint_id"].to_pylist(), failed["error"].to_pylist(), strict=True):
            errors[error.split(":", 1)[0]] += 1
            if len(examples) < EXAMPLES:
                examples.append((joint_id, error))
    return rau.combine(partials, run_id), dict(errors), examples, carried


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
    }
