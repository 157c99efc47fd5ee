"""Training throughput, measured side by side in one run: bare model step, step with augmentation, Ray Train.

- bare: forward + backward + Adam step on batches already on the device, already scaled to [0, 1];
- augmented: the same batches from uint8, scaled and augmented on the device, then the same step;
- pipeline: a real ``erosion train`` run (Ray Data streaming and decoding the registry, DDP across the
  workers, validation and checkpoints included), from its last epoch, per worker.

The ratios say what augmentation and the data path cost against the model alone. The bare and augmented
steps run in this process with as many threads as one worker gets (``threads``), on the same batch of real
crops, through the training loop's own step function.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from erosion import datasets, storage, training
from erosion.augment import AugmentConfig
from erosion.model import ErosionCNN, ModelConfig
from erosion.preprocess import letterbox_batch


@dataclass(frozen=True)
class TrainBenchConfig:
    """What to measure; the defaults are a CPU-sized run (reduced model)."""

    registry: str  # a registry folder with registry/ and ratings/ (e.g. from ``erosion synth``)
    out: str  # where the pipeline run writes its checkpoints
    model: ModelConfig = field(default_factory=lambda: ModelConfig(input_size=64, width=0.25))
    batch_size: int = 128
    steps: int = 20  # timed steps of the bare and augmented loops (after 3 warm-up steps)
    workers: int = 2
    epochs: int = 3  # of the pipeline run; its last epoch is the one reported
    threads: int = 1  # torch threads for the in-process loops: what one worker gets
    device: str = "cpu"


def train_throughput(config: TrainBenchConfig) -> dict:
    """Measure the three throughputs and their ratios; returns them with the setting they rest on."""
    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    pixels, labels = _crops(config)
    bare = _step_rate(config, pixels, labels, device, augmented=False)
    augmented = _step_rate(config, pixels, labels, device, augmented=True)
    run = training.train(
        training.TrainConfig(
            data=datasets.LabelSet(f"{config.registry}/registry", f"{config.registry}/ratings"),
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
    return {
        "setting": dataclasses.asdict(config) | {"machine": platform.machine(), "torch": torch.__version__},
        "bare_step_crops_per_s": bare,
        "augmented_step_crops_per_s": augmented,
        "pipeline_crops_per_s_per_worker": pipeline,
        "pipeline_epoch_seconds": last["seconds"],
        "augmented_over_bare": augmented / bare,
        "pipeline_over_bare": pipeline / bare,
    }


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
    model = ErosionCNN(config.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, target = torch.from_numpy(pixels).to(device), torch.from_numpy(labels).to(device)
    weights = torch.ones(6, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    augmentation = AugmentConfig() if augmented else None
    began = 0.0
    for step in range(3 + config.steps):
        if step == 3:
            _sync(device)
            began = time.perf_counter()
        training.train_step(model, optimizer, batch, target, weights, generator, augmentation)
    _sync(device)
    return config.steps * len(labels) / (time.perf_counter() - began)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
