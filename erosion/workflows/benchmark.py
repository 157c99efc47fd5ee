"""Throughput of training and of scoring, each measured side by side in one run.

Training (``train_throughput``):

- bare: forward + backward + Adam step on batches already on the device, already scaled to [0, 1];
- augmented: the same batches from uint8, scaled and augmented on the device, then the same step;
- pipeline: a real ``erosion train`` run (Ray Data streaming and decoding the registry, DDP across the
  workers, validation and checkpoints included), from its last epoch, per worker.

The ratios say what augmentation and the data path cost against the model alone. The bare and augmented
steps run in this process with as many threads as one worker gets (``threads``), on the same batch of real
crops, through the training loop's own step function.

Scoring (``score_throughput``), at each registry size (the registry is a source registry's rows repeated under
new joint ids, so that sizes differ by rows and nothing else):

- end to end: ``scoring.score``, the whole run from start-up to commit (Rau scores and manifest included);
- pipeline: the same plan (read, decode, model actors) without the write;
- model only: the same actor pool (``scoring.model_scores``) on as many crops, already decoded and in memory;
- decode only: the registry read and decoded by the same CPU tasks (``tasks.scoring_crops``), no model, on every
  CPU; and beside the actors: on the CPUs the pipeline leaves them (``pipeline_over_slower_stage`` is the pipeline's
  rate over the slower of this and the model only: what the plumbing costs, whichever stage bounds it);
- naive: a fresh Python process (``naive``), a PyTorch DataLoader over the Parquet files, decode and model in
  turn; timed whole (imports and model load included) and its loop alone;
- peak private memory of the driver (USS) and of the largest Ray worker (USS less object-store pages) during
  an end-to-end run of its own, before the timed ones (reading every worker's page map costs CPU).

Each timed execution starts on a quiet machine (``_quiet``): the one before it has let go of its cores.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from erosion.core import schema
from erosion.core.settings import setting
from erosion.io import datasets, heap, leases, storage
from erosion.model import models
from erosion.model.augment import AugmentConfig
from erosion.model.network import ErosionCNN, ModelConfig
from erosion.registry.preprocess import letterbox_batch
from erosion.score import decoding, scoring, tasks
from erosion.train import labelled, step, training
from erosion.workflows import nightly


@dataclass(frozen=True)
class TrainBenchConfig:
    """What to measure; the defaults are a CPU-sized run (reduced model)."""

    registry: str = setting("a registry folder with registry/ and ratings/ (e.g. from ``erosion synth``)")
    out: str = setting("where the pipeline run writes its checkpoints")
    model: ModelConfig = setting(
        "the architecture (default: reduced)", factory=lambda: ModelConfig(input_size=64, width=0.25)
    )
    batch_size: int = setting("crops per step", 128)
    steps: int = setting("timed steps of the bare and augmented loops (after 3 warm-up steps)", 20)
    workers: int = setting("Ray Train workers of the pipeline run", 2)
    epochs: int = setting("of the pipeline run; its last epoch is the one reported", 3)
    threads: int = setting("torch threads for the in-process loops: what one worker gets", 1)
    device: str = setting("torch device of the in-process steps", "cpu")
    json: str = setting("also write the figures here", "")


def train_throughput(config: TrainBenchConfig) -> dict:
    """Measure the three throughputs and their ratios; returns them with the setting they rest on."""
    torch.set_num_threads(config.threads)
    heap.keep_freed_memory()  # as the workers do
    device = torch.device(config.device)
    pixels, labels = _crops(config)
    bare = _step_rate(config, pixels, labels, device, augmented=False)
    augmented = _step_rate(config, pixels, labels, device, augmented=True)
    run = training.train(
        training.TrainConfig(
            data=labelled.LabelSet(f"{config.registry}/registry", f"{config.registry}/ratings"),
            out=config.out,
            name=f"bench-{int(time.time())}",
            epochs=config.epochs,
            workers=config.workers,
            gpus_per_worker=1.0 if device.type == "cuda" else 0.0,
            batch_size=config.batch_size,
            model=config.model,
        )
    )
    last = run.card.history[-1]
    pipeline = last["train_crops_per_s"] / config.workers
    return _written(
        config.json,
        {
            "setting": dataclasses.asdict(config) | {"machine": platform.machine(), "torch": torch.__version__},
            "bare_step_crops_per_s": bare,
            "augmented_step_crops_per_s": augmented,
            "pipeline_crops_per_s_per_worker": pipeline,
            "pipeline_epoch_seconds": last["seconds"],
            "augmented_over_bare": augmented / bare,
            "pipeline_over_bare": pipeline / bare,
        },
    )


def _written(url: str, figures: dict) -> dict:
    """The figures, also written as JSON to ``url`` when one is given."""
    if url:
        storage.write_json(url, figures)
    return figures


def _crops(config: TrainBenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """One batch of real crops of the registry, letterboxed, with random stages (speed does not care)."""
    fs, _ = storage.filesystem(f"{config.registry}/registry")
    file = storage.parquet_files(f"{config.registry}/registry")[0]
    _, batch = next(storage.iter_file_batches(fs, file, ["image"], config.batch_size))
    pixels, _ = letterbox_batch(batch["image"].to_pylist(), config.model.input_size)
    return pixels, np.random.default_rng(0).integers(0, 6, len(pixels))


def _step_rate(
    config: TrainBenchConfig, pixels: np.ndarray, labels: np.ndarray, device: torch.device, augmented: bool
) -> float:
    model = ErosionCNN(config.model).to(device).to(memory_format=torch.channels_last)  # as the workers train
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, target = torch.from_numpy(pixels).to(device), torch.from_numpy(labels).to(device)
    weights = torch.ones(6, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    augmentation = AugmentConfig() if augmented else None
    began = 0.0
    for i in range(3 + config.steps):
        if i == 3:
            _sync(device)
            began = time.perf_counter()
        step.train_step(model, optimizer, batch, target, weights, generator, augmentation)
    _sync(device)
    return config.steps * len(labels) / (time.perf_counter() - began)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class ScoreBenchConfig:
    """What to measure; the model decides the speed (on CPU, use a reduced one and say so)."""

    registry: str = setting("a source registry table; its rows are repeated to each size")
    model: str = setting("a checkpoint or a training run's folder")
    out: str = setting("where the sized registries and the runs go")
    sizes: tuple[int, ...] = setting("comma-separated registry sizes", (10_000, 100_000))
    model_only_rows: int = setting("at most this many in-memory crops for the model-only rate", 100_000)
    batch_size: int = setting("crops per model call", scoring.ScoreConfig.batch_size)  # scoring's own defaults
    actors: int = setting("model actors", scoring.ScoreConfig.actors)
    gpus_per_actor: float = setting("> 0: each actor scores on a GPU", scoring.ScoreConfig.gpus_per_actor)
    cpus_per_actor: float = setting("CPUs per model actor", scoring.ScoreConfig.cpus_per_actor)
    repeats: int = setting("measure each rate this many times, interleaved; the figures are the medians", 1)
    json: str = setting("also write the figures here", "")


def score_throughput(config: ScoreBenchConfig) -> dict:
    """Measure end-to-end, pipeline, model-only, decode-only and naive rates and peak memory at each size.

    Every rate is rows / wall time of the whole execution, start-up included (actors starting, the model
    loading); ``model_only_startup_s`` is how long the model-only run took to its first batch. With ``repeats``
    each rate is measured that many times, one round of all of them after another, and the figures are the
    medians, each with its ``_range``; the ratios are of the medians. The memory is sampled first, in a run of its
    own (the first job of the Ray at the first size).
    """
    chosen = models.resolve(config.model)
    card, size = chosen.cards[config.model], chosen.input_size
    pool = ("batch_size", "actors", "gpus_per_actor", "cpus_per_actor")
    settings = {name: getattr(config, name) for name in pool}
    figures: dict = {
        "setting": dataclasses.asdict(config)
        | {"scoring": settings, "model": dataclasses.asdict(card.model), "machine": platform.machine()},
        "cpus": os.cpu_count(),
    }
    source = storage.read_table(config.registry, [*schema.KEYS, "image"]).slice(0, 2_000)
    crops = decoding.decode_batch(source, size, chosen.coverage())
    for rows in config.sizes:
        registry = _sized_registry(source, rows, f"{config.out}/registry-{rows}")
        run = scoring.ScoreConfig(registry, config.model, f"{config.out}/runs", run_id=f"bench-{rows}", **settings)
        # memory first, in a run of its own: sampling costs CPU (_PeakMemory), the timed runs go without, and the
        # model-only runs' in-memory crops would count in the driver's peak
        with _PeakMemory() as memory:
            scoring.score(dataclasses.replace(run, run_id=f"bench-{rows}-memory"))
        model_rows = min(rows, config.model_only_rows)
        rounds = [_score_rates(run, chosen, crops, rows, model_rows, i) for i in range(config.repeats)]
        rates = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
        if config.repeats > 1:
            rates |= {f"{key}_range": [min(r[key] for r in rounds), max(r[key] for r in rounds)] for key in rounds[0]}
        figures[str(rows)] = rates = rates | {
            "driver_peak_uss_mb": memory.driver_mb,
            "largest_worker_peak_mb": memory.worker_mb,
            "largest_worker_object_store_pages_mb": memory.store_mb,
            "largest_worker": memory.worker,
        }
        model_only = rates["model_only_crops_per_s"]
        rates["pipeline_over_model_only"] = rates["pipeline_crops_per_s"] / model_only
        rates["end_to_end_over_model_only"] = rates["end_to_end_crops_per_s"] / model_only
        rates["end_to_end_over_naive"] = rates["end_to_end_crops_per_s"] / rates["naive_crops_per_s"]
        slower = min(model_only, rates["decode_beside_actors_crops_per_s"])  # the pipeline can go no faster
        rates["pipeline_over_slower_stage"] = rates["pipeline_crops_per_s"] / slower
    if len(config.sizes) > 1:
        small, large = (figures[str(n)] for n in (config.sizes[0], config.sizes[-1]))
        for key in ("driver_peak_uss_mb", "largest_worker_peak_mb"):
            figures[f"{key}_growth"] = large[key] / small[key] - 1
    return _written(config.json, figures)


def _score_rates(
    run: scoring.ScoreConfig, chosen: models.Models, crops: pa.Table, rows: int, model_rows: int, round_: int
) -> dict[str, float]:
    """One round of the timed measurements on ``run``'s registry of ``rows`` (``round_`` names its end-to-end run;
    ``model_rows`` of ``crops`` for the model-only rate)."""
    _quiet()
    began = time.perf_counter()
    scoring.score(dataclasses.replace(run, run_id=f"{run.run_id}-{round_}"))
    whole = time.perf_counter() - began
    naive_process, naive_loop = _naive(run.registry, run.model, rows)
    model_only, startup = _model_only(crops, model_rows, run, chosen)
    return {
        "end_to_end_crops_per_s": rows / whole,
        "end_to_end_seconds": whole,
        "pipeline_crops_per_s": _rate(scoring.pipeline(run, "bench", chosen), rows),
        "model_only_crops_per_s": model_only,
        "model_only_startup_s": startup,
        "decode_only_crops_per_s": _rate(_decoded(run.registry, chosen, run), rows),
        "decode_beside_actors_crops_per_s": _decode_beside_actors(run, chosen, rows),
        "naive_crops_per_s": naive_process,
        "naive_loop_crops_per_s": naive_loop,
    }


@dataclass(frozen=True)
class NightsBenchConfig:
    """Nights of the nightly job on a registry of ``rows`` crops in ``files`` files."""

    registry: str = setting("a source registry table; its rows are repeated to the size")
    model: str = setting("a checkpoint or a training run's folder")
    ratings: str = setting("the ratings for the nights' reports")
    out: str = setting("where the sized registry and the nights go")
    rows: int = setting("crops in the registry", 100_000)
    files: int = setting("registry files they are spread over", 20)
    json: str = setting("also write the figures here", "")


def nights(config: NightsBenchConfig) -> dict:
    """A first night, an unchanged second night, a night after one file was rewritten (one crop's image
    changed), and two runs of one night started together: each night's wall time and what it read."""
    source = storage.read_table(config.registry, [*schema.KEYS, "image"]).slice(0, 2_000)
    registry = _sized_registry(source, config.rows, f"{config.out}/registry", -(-config.rows // config.files))
    settings = scoring.ScoreConfig(registry, config.model, f"{config.out}/nights")

    def night(run_id: str, out: str = settings.out) -> dict:
        began = time.perf_counter()
        scoring_settings = dataclasses.replace(settings, run_id=run_id, out=out)
        m = nightly.nightly(nightly.NightlyConfig(scoring_settings, ratings=config.ratings)).manifest
        keys = ("total", "carried", "files_read", "files_carried", "rows_read", "bytes_read")
        return {"wall_s": time.perf_counter() - began} | {k: m.rows[k] for k in keys}

    figures: dict = {"setting": dataclasses.asdict(config), "cpus": os.cpu_count()}
    figures["first"] = night("night-1")
    figures["unchanged"] = night("night-2")
    changed = storage.parquet_files(registry)[0]
    table = pq.read_table(changed)
    images = table["image"].to_pylist()
    images[0] = images[1]  # one crop's image replaced by another's: the file's bytes and footer change
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", pa.array(images)), changed)
    figures["one_file_changed"] = night("night-3") | {"changed_file_bytes": os.path.getsize(changed)}
    said: list[str] = []

    def together() -> None:
        try:
            said.append(f"committed {night('night-4', f'{config.out}/together')['total']} rows")
        except leases.Held as refused:
            said.append(f"refused: {refused}")

    threads = [threading.Thread(target=together) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures["two_together"] = sorted(said)
    return _written(config.json, figures)


def _sized_registry(source: pa.Table, rows: int, url: str, rows_per_file: int = 5_000) -> str:
    """``rows`` registry rows: the source's rows over and over, each copy under new joint ids."""
    fs, path = storage.filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    for start in range(0, rows, rows_per_file):
        take = np.arange(start, min(rows, start + rows_per_file)) % source.num_rows
        part = source.take(pa.array(take))
        ids = pa.array([f"bench/{start + i}" for i in range(len(take))])
        part = part.set_column(0, "joint_id", ids).cast(schema.REGISTRY)
        with fs.open(f"{path}/part-{start // rows_per_file:05d}.parquet", "wb") as f:
            pq.write_table(part, f)
    return url


def _decoded(registry: str, chosen: models.Models, run: scoring.ScoreConfig) -> ray.data.Dataset:
    """The registry read and decoded by scoring's own decode tasks, no model."""
    rows = datasets.read(registry, [*schema.KEYS, "image"], cpus=run.decode_cpus)
    return tasks.scoring_crops(rows, chosen.input_size, chosen.coverage(), cpus=run.decode_cpus)


def _decode_beside_actors(run: scoring.ScoreConfig, chosen: models.Models, rows: int) -> float:
    """``_decoded``'s rate on only the CPUs the pipeline leaves its decode tasks (the cluster's less the model
    actors'): the decode's part of the pipeline."""
    context = ray.data.DataContext.get_current()
    limits = context.execution_options.resource_limits
    left = ray.cluster_resources()["CPU"] - run.actors * run.cpus_per_actor
    context.execution_options.resource_limits = limits.copy(cpu=left)
    try:
        return _rate(_decoded(run.registry, chosen, run), rows)
    finally:
        context.execution_options.resource_limits = limits


def _model_only(crops: pa.Table, rows: int, run: scoring.ScoreConfig, chosen: models.Models) -> tuple[float, float]:
    """The actor pool alone on decoded crops already in the object store: (crops/s, seconds to first batch)."""
    table = pa.concat_tables([crops] * -(-rows // crops.num_rows)).slice(0, rows)
    blocks = ray.data.from_arrow([table.slice(i, 2_000) for i in range(0, rows, 2_000)]).materialize()
    _quiet()
    began, first, count = time.perf_counter(), 0.0, 0
    scored = scoring.model_scores(blocks, run, "bench", chosen)
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        first = first or time.perf_counter() - began
        count += batch.num_rows
    if count != rows:
        raise RuntimeError(f"{count} rows came out of {rows}.")
    return rows / (time.perf_counter() - began), first


def _rate(dataset: ray.data.Dataset, rows: int) -> float:
    """Rows per second of a whole execution, consumed batch by batch and dropped."""
    _quiet()
    began = time.perf_counter()
    count = sum(b.num_rows for b in dataset.iter_batches(batch_format="pyarrow", batch_size=None))
    if count != rows:
        raise RuntimeError(f"{count} rows came out of {rows}.")
    return rows / (time.perf_counter() - began)


def _naive(registry: str, model_url: str, rows: int) -> tuple[float, float]:
    """The naive loop (``naive.score``) as a user runs a script: a fresh Python process, its imports and model
    load timed with it: (crops/s of the whole process, crops/s of its loop alone)."""
    command = [sys.executable, "-m", "erosion.workflows.naive", registry, model_url, str(rows)]
    _quiet()
    began = time.perf_counter()
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return rows / (time.perf_counter() - began), float(printed.split()[-1])


QUIET_CORES = 0.25
"""A timed execution starts once fewer cores than this are busy: the machine as quiet as an idle local Ray leaves
it (0-4 % of 2 cores here, measured)."""


def _quiet(timeout: float = 10.0) -> None:
    """Wait until fewer than ``QUIET_CORES`` cores are busy over 0.2 s, or ``timeout`` seconds have passed: one core
    stays busy for about a second after an execution with a model actor ends (measured here; no process still alive
    used it, so most likely the actor's process exiting), which would otherwise count against whichever measurement
    comes next."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if psutil.cpu_percent(interval=0.2) / 100 * psutil.cpu_count() < QUIET_CORES:
            return


class _PeakMemory:
    """Samples the private memory of this process (USS) and of every Ray worker (USS less the object store's
    pages that only this worker maps: those are blocks in Ray's shared object store, bounded by its capacity, not
    the worker's own memory; measured, they were 454 of a decode worker's 601 MB USS at 10^5 crops). One sample
    reads every worker's page map: 0.17 s of CPU with a model actor and ten other Ray processes, measured, a
    third of a core at one sample each 0.5 s."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.driver_mb, self.worker_mb, self.worker, self.store_mb = every, 0.0, 0.0, "", 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.driver_mb = max(self.driver_mb, me.memory_full_info().uss / 2**20)
            for process in me.children(recursive=True):  # the local Ray this process started
                try:
                    name = process.name()  # e.g. ray::MapWorker(MapBatches(Scorer))
                    if not name.startswith("ray::"):
                        continue  # Ray's own daemons: their memory (smaps) is not read
                    private, store = 0.0, 0.0
                    for mapping in process.memory_maps(grouped=True):
                        pages = (mapping.private_clean + mapping.private_dirty) / 2**20
                        private += pages
                        store += pages if mapping.path.startswith("/dev/shm/plasma") else 0.0
                    if private - store > self.worker_mb:
                        self.worker_mb, self.worker, self.store_mb = private - store, name, store
                except psutil.Error:
                    continue
            self._stop.wait(self.every)
