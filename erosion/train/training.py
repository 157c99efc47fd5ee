"""Data-parallel training of the CNN on Ray Train, with per-epoch metrics, checkpoints and resumption.

The driver counts the training split's stages (for the class weights) and hands two lazy Ray Data
datasets to a ``TorchTrainer``: the training split, sharded across the workers, and the validation split,
which rank 0 evaluates whole after every epoch (so every validation row counts exactly once). Each worker
streams its shard as uint8 batches, scales and augments them on its device, and steps Adam on the weighted
cross-entropy; DDP averages the gradients. After every epoch rank 0 reports the metrics with a checkpoint
(weights, optimizer, card with the whole history); Ray Train keeps the best by validation balanced accuracy
and the latest. A worker that dies is replaced and the run goes on from the latest checkpoint; the same
command with the same run name resumes a stopped run. When the run ends, the best checkpoint, with the full
history on its card, is published as ``<out>/<name>/model``: that folder is what scoring loads.

Transfer learning (``model.arch == "vgg16"``, the paper's second model) trains in two phases: for the first
``frozen_epochs`` the convolutional ``features`` are frozen (no gradients, not in the optimizer) and Adam at
``frozen_lr`` trains the classifier; then every layer trains, with a fresh Adam at ``finetune_lr``. The phase
of an epoch follows from its number, so a resumed run picks up the phase it stopped in; every epoch's metrics
say which phase it trained in and at which learning rate.

The CDF head (``model.head == "cdf"``, the thesis's regression) trains the same way on the rater's % eroded
surface instead of the stage, with the CRPS (:mod:`erosion.model.cdf`) weighted by the class weight of the rating's
stage; its validation metrics add the mean absolute error of the predicted %.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray.train
import ray.train.torch
import torch
from torch import nn

from erosion.core import agreement, domain
from erosion.core.faults import Faults
from erosion.core.settings import setting
from erosion.core.split import fold_of, member
from erosion.io import heap, storage
from erosion.model import cdf, checkpoint
from erosion.model.augment import AugmentConfig
from erosion.model.network import ModelConfig, build_model, file_sha256, load_pretrained, stage_logits
from erosion.report import figures
from erosion.train import evaluate, labelled, recipe, step

FAULT_AFTER_S = 5.0
"""How long into its epoch the test's failing worker dies: more than Ray Train's controller takes (2 s, twice over)
to collect the previous epoch's report, whose checkpoint a worker dying at once can take with it."""

SCORE = "selection"  # picks the best checkpoint: the smoothed validation balanced accuracy of an eligible epoch
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the defaults are the paper's (Adam 1e-3, batch 128, weighted loss, its augmentation)."""

    data: labelled.LabelSet = setting("the registry, ratings, rater and split")
    out: str = setting("runs live under <out>/<name>: Ray Train's checkpoints and the published model/")
    name: str = setting("the same name and out resume a run", "erosion")
    epochs: int = setting("at most this many epochs (early stopping may end the run sooner)", 80)
    workers: int = setting("Ray Train workers", 2)
    gpus_per_worker: float = setting("> 0 trains on GPUs (bf16 autocast, channels-last)", 0.0)
    cpus_per_worker: float = setting("leave CPUs for Ray Data's read and decode tasks", 0.5)
    batch_size: int = setting(
        "crops per optimizer step, all workers together (the paper's 128): each worker takes its share", 128
    )
    learning_rate: float = setting("Adam's learning rate (the CNN's; the schedule's peak)", 1e-3, flag="lr")
    schedule: str = setting(
        "the CNN's learning rate: cosine (linear warm-up, then half a cosine) or constant (the paper's)", "cosine"
    )
    warmup_epochs: int = setting("cosine: epochs of linear warm-up", 3)
    lr_floor: float = setting("cosine: the last epoch's learning rate as a share of --lr", 0.02)
    best_after: int = setting("epochs before this one (0-based) never become the best checkpoint", 5)
    select_window: int = setting(
        "the best checkpoint by validation balanced accuracy averaged over this many epochs ending with it"
        " (1: the paper's rule, one epoch)",
        5,
    )
    patience: int = setting("stop after this many epochs without a better validation balanced accuracy; 0: never", 20)
    weighted_loss: bool = setting("balanced class weights of the training split; False: plain (unweighted) loss", True)
    weight_power: float = setting(
        "the balanced class weights n / (K n_k) raised to this power (1: the paper's; 0.5: softer, the recipe's)", 0.5
    )
    oversample: bool = setting(
        "the thesis's model b: each stage's training rows repeated to about the commonest stage's count (each copy"
        " augmented anew; an epoch grows accordingly)",
        False,
    )
    seed: int = setting("seed of the weights, the shuffling and the augmentation", 0)
    shuffle_buffer: int = setting("rows each worker shuffles locally (blocks are also read in random order)", 1024)
    model: ModelConfig = setting("the architecture", factory=ModelConfig)
    augment: AugmentConfig = setting("augmentation strengths (0: off)", factory=AugmentConfig)
    pretrained: str | None = setting(
        "vgg16: a local torchvision vgg16 state_dict (ImageNet); None: random weights", None
    )
    init: str = setting(
        "a trained model (checkpoint or run folder) to start from, its architecture too: fine-tuning, e.g. a hand"
        " model on feet (--body-parts foot_left,foot_right); empty: from scratch",
        "",
    )
    mirror: bool = setting(
        "right hands and feet flipped left-right to the left orientation before the model (the card records it)", True
    )
    frozen_epochs: int = setting("vgg16: the first epochs train the classifier only, on frozen features", 25)
    frozen_lr: float = setting("vgg16: Adam's learning rate while the features are frozen", 1e-4)
    finetune_lr: float = setting("vgg16: Adam's learning rate once every layer trains", 1e-5)
    folds: int = setting(
        "cross-fitting: train this many fold models, each never shown one fold of patients (0: one model)", 0
    )
    max_failures: int = setting("worker failures the run survives", 2)
    faults: Faults = setting("faults injected by tests; never recorded", factory=Faults, cli=False)


@dataclass(frozen=True)
class TrainResult:
    """Where the run lives and what it chose."""

    run: str  # <out>/<name>
    model: str  # <out>/<name>/model, the best checkpoint
    card: checkpoint.ModelCard  # of the best checkpoint, with the whole history (a fold set: the set's card)
    folds: tuple[TrainResult, ...] = ()  # a cross-fitted run's fold models, in fold order

    @property
    def best(self) -> dict:
        return self.card.history[self.card.epoch]


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a training run on the connected Ray cluster and publish its best model (with ``folds``: the
    fold models, then the fold set)."""
    _check(config)
    init = _init(config)
    if init:
        config = dataclasses.replace(config, model=checkpoint.read_card(config.init, config.data.options).model)
    if config.folds:
        return _train_folds(config)
    ray.data.DataContext.get_current().enable_progress_bars = False  # one progress line per epoch instead
    train_labels = labelled.split_labels(config.data, "train")
    if train_labels.size == 0 or labelled.split_labels(config.data, "val").size == 0:
        raise ValueError(f"the training and validation splits need rated joints of rater {config.data.rater!r}.")
    weights = (
        (domain.balanced_class_weights(train_labels) ** config.weight_power).tolist() if config.weighted_loss else None
    )
    trainer = ray.train.torch.TorchTrainer(
        _train_worker,
        train_loop_config={
            "config": config,
            "class_weights": weights,
            "pretrained": pretrained_weights(config),
            "init": init,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.gpus_per_worker > 0,
            resources_per_worker={"CPU": config.cpus_per_worker} | _gpus(config),
        ),
        run_config=ray.train.RunConfig(name=config.name, **_storage(config), **_policies(config)),
        datasets={split: _split(config, split, train_labels) for split in ("train", "val")},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    return _publish(config, result.get_best_checkpoint(SCORE, "max"), result.checkpoint, weights)


def _check(config: TrainConfig) -> None:
    if config.epochs < 1 or config.workers < 1 or config.batch_size < config.workers:
        raise ValueError("epochs and workers must be at least 1, and the batch size at least one crop a worker.")
    if config.folds == 1 or config.folds < 0:
        raise ValueError(f"folds must be 0 (one model) or at least 2, got {config.folds}.")
    if config.schedule not in recipe.SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {config.schedule!r}; expected one of {recipe.SCHEDULES}.")
    if config.faults.fail_at_epoch is not None and not 1 <= config.faults.fail_at_epoch < config.epochs:
        raise ValueError("fail_at_epoch must come after a first checkpoint: 1 <= fail_at_epoch < epochs.")
    if config.init and config.pretrained:
        raise ValueError("start from a trained model (--init) or from pretrained weights (--pretrained), not both.")
    if config.pretrained and config.model.arch != "vgg16":
        raise ValueError(f"pretrained weights are for arch 'vgg16', got arch {config.model.arch!r}.")
    if config.model.arch == "vgg16" and config.frozen_epochs < 0:
        raise ValueError(f"frozen_epochs must be at least 0, got {config.frozen_epochs}.")
    unknown = [part for part in config.data.body_parts if part not in domain.BODY_PARTS]
    if unknown or not config.data.body_parts:
        raise ValueError(f"body_parts must be some of {', '.join(domain.BODY_PARTS)}; got {config.data.body_parts}.")


def _init(config: TrainConfig) -> dict | None:
    """The trained model a run starts from (``init``: its folder and version), checked before any worker starts."""
    if not config.init:
        return None
    card = checkpoint.read_card(config.init, config.data.options)
    if card.members:
        raise ValueError(f"{config.init} is a fold set: start from one model (one of its fold-k/model folders).")
    folder = config.init if "://" in config.init else os.path.abspath(config.init)  # workers run elsewhere
    return {"model": folder, "model_version": card.model_version}


def pretrained_weights(config: TrainConfig) -> dict | None:
    """The file and SHA-256 of the weights a vgg16 run starts from, checked before any worker starts; None: random.

    Says so (a warning) when vgg16 starts from random weights, and when it would never leave the frozen phase.
    """
    if config.model.arch != "vgg16":
        return None
    if config.frozen_epochs >= config.epochs:
        log.warning(
            "vgg16: all %d epochs train on frozen features (frozen_epochs %d)", config.epochs, config.frozen_epochs
        )
    if not config.pretrained:
        log.warning("vgg16 starts from random weights: no pretrained weights file given (nothing is downloaded)")
        return None
    if "://" in config.pretrained or not os.path.isfile(config.pretrained):
        raise FileNotFoundError(f"pretrained weights must be a local file, got {config.pretrained!r}.")
    return {"file": os.path.abspath(config.pretrained), "sha256": file_sha256(config.pretrained)}


def phase(config: TrainConfig, epoch: int) -> tuple[bool, float]:
    """Whether ``epoch`` (0-based) trains on frozen features, and its learning rate."""
    if config.model.arch == "cnn":
        rate = recipe.learning_rate(
            config.learning_rate, epoch, config.epochs, config.schedule, config.warmup_epochs, config.lr_floor
        )
        return False, rate
    if epoch < config.frozen_epochs:
        return True, config.frozen_lr
    return False, config.finetune_lr


def _gpus(config: TrainConfig) -> dict:
    return {"GPU": config.gpus_per_worker} if config.gpus_per_worker > 0 else {}


def _storage(config: TrainConfig) -> dict:
    if config.out.startswith("s3://"):
        fs, path = storage.arrow_filesystem(config.out, config.data.options)
        return {"storage_path": path, "storage_filesystem": fs}
    return {"storage_path": os.path.abspath(config.out)}


def _policies(config: TrainConfig) -> dict:
    return {
        "failure_config": ray.train.FailureConfig(max_failures=config.max_failures),
        "checkpoint_config": ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=SCORE, checkpoint_score_order="max"
        ),  # Ray Train keeps the latest checkpoint beside the best one
    }


def _split(config: TrainConfig, split: str, train_labels: np.ndarray) -> ray.data.Dataset:
    rows = labelled.labelled_split(config.data, split, columns=("joint_id", "image", "body_part"))
    if split == "train" and config.oversample:
        rows = labelled.oversampled(rows, domain.oversampling_factors(train_labels).tolist(), config.seed)
    elif split == "train":
        rows = rows.randomize_block_order(seed=config.seed)
    return labelled.decoded(rows, checkpoint.preprocess_settings(config.model, config.mirror))


def _publish(
    config: TrainConfig, best: ray.train.Checkpoint, latest: ray.train.Checkpoint, weights: list[float] | None
) -> TrainResult:
    """The best checkpoint as ``<run>/model``, with the whole history and its calibration; the learning curve."""
    run = f"{config.out.rstrip('/')}/{config.name}"
    with latest.as_directory() as directory:
        history = checkpoint.read_card(directory).history
    with best.as_directory() as directory:
        model, card = checkpoint.load(directory)
    card.history = history
    data = config.data
    card.body_parts, card.joints = list(data.body_parts), labelled.rated_joints(data)
    reference = evaluate.rater_reference(data.ratings, data.rater, data.options)
    card.calibration = evaluate.fit_calibration(
        model,
        card.preprocess,
        reference,
        data.registry,
        weights,
        data.split_seed,
        data.options,
        data.folds,
        data.held_out,
        data.body_parts,
    )
    checkpoint.write(f"{run}/model", model, card, options=data.options)
    seen = [p for p in labelled.rated_patients(data) if _seen(p, data)]
    checkpoint.write_patients(f"{run}/model", pa.table({"patient_id": pa.array(seen, pa.string())}), data.options)
    curve = figures.learning_curve(history, card.epoch)
    storage.write_bytes(f"{run}/learning_curve.png", curve, config.data.options)
    return TrainResult(run=run, model=f"{run}/model", card=card)


def _seen(patient: str, data: labelled.LabelSet) -> bool:
    """Whether a run on ``data`` trained or validated on the patient's joints."""
    return any(member(patient, split, data.split_seed, data.folds, data.held_out) for split in ("train", "val"))


def _train_folds(config: TrainConfig) -> TrainResult:
    """K Ray Train runs, one after the other (each resumable as any run), fold k's never shown the patients of
    fold k; then ``<run>/model``, the fold set, with every rated patient's fold."""
    run = f"{config.out.rstrip('/')}/{config.name}"
    members = tuple(
        train(
            dataclasses.replace(
                config,
                folds=0,
                out=run,
                name=f"fold-{k}",
                data=dataclasses.replace(config.data, folds=config.folds, held_out=k),
            )
        )
        for k in range(config.folds)
    )
    card = checkpoint.write_set(run, [f"fold-{k}/model" for k in range(config.folds)], config.data.options)
    patients = labelled.rated_patients(config.data)
    folds = [fold_of(p, config.data.split_seed, config.folds) for p in patients]
    table = pa.table({"patient_id": pa.array(patients, pa.string()), "fold": pa.array(folds, pa.int16())})
    checkpoint.write_patients(f"{run}/model", table, config.data.options)
    return TrainResult(run=run, model=f"{run}/model", card=card, folds=members)


def _train_worker(loop_config: dict) -> None:
    """Ray Train's per-worker loop: resume, then train, evaluate (rank 0) and report each remaining epoch."""
    config: TrainConfig = loop_config["config"]
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    heap.keep_freed_memory()  # glibc would hand every step's activations back to the kernel
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    torch.manual_seed(config.seed)
    net = build_model(config.model)
    history: list[dict] = []
    pretrained, init = loop_config["pretrained"], loop_config["init"]
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as directory:
            net, card = checkpoint.load(directory)
            optimizer_state = checkpoint.load_optimizer_state(directory)
            history, pretrained = card.history, card.pretrained
    elif pretrained:
        if load_pretrained(net, pretrained["file"]) != pretrained["sha256"]:
            raise ValueError(f"{pretrained['file']} on this worker is not the file the driver checked.")
    elif init:
        net, card = checkpoint.load(init["model"], options=config.data.options)
        if card.model_version != init["model_version"]:
            raise ValueError(f"{init['model']} changed since the driver read it: model {card.model_version}.")
    net = net.to(memory_format=torch.channels_last)  # on a CPU too: 1.5-1.9x the reduced CNN's step rate
    weights = loop_config["class_weights"]
    class_weights = torch.tensor(weights, device=device) if weights else torch.ones(domain.NUM_STAGES, device=device)
    generator = torch.Generator(device=device)
    start = len(history)
    current = False
    for epoch in range(start, config.epochs):
        frozen, learning_rate = phase(config, epoch)
        if epoch == start or frozen != current:
            model = optimizer = None  # drop the last DDP wrapper and its gradient hooks before wrapping anew
            model, optimizer = _prepare(net, frozen, learning_rate)
            if resumed and epoch == start and history[-1].get("frozen_features", False) == frozen:
                optimizer.load_state_dict(optimizer_state)  # the same phase: the same parameters in the optimizer
            current = frozen
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        began = time.perf_counter()
        generator.manual_seed(config.seed * 1_000_003 + epoch * 1_009 + rank)
        fail = (
            config.faults.fail_at_epoch == epoch and start < epoch and rank == world - 1
        )  # once: not after the restart
        loss, rows, confusion = _train_epoch(
            model, optimizer, class_weights, generator, config, -(-config.batch_size // world), fail
        )
        seconds = time.perf_counter() - began
        metrics = {"epoch": epoch, "attempt_start_epoch": start, "train_loss": loss, "train_rows": rows}
        metrics |= _accuracies(confusion, "train")
        metrics |= {"frozen_features": frozen, **_optimized(optimizer)}
        metrics["train_crops_per_s"] = rows / seconds  # all workers together
        if rank == 0:
            metrics |= _evaluate(net, class_weights, config, on_gpu)
            scores = [row["val_balanced_accuracy"] for row in history] + [metrics["val_balanced_accuracy"]]
            metrics[SCORE] = recipe.selection(scores, config.epochs, config.best_after, config.select_window)
            metrics["seconds"] = time.perf_counter() - began
            _report_with_checkpoint(net, optimizer, config, history + [metrics], pretrained, init)
            print(progress(metrics, config.epochs), flush=True)  # in Ray's log files
        else:
            ray.train.report(metrics, checkpoint=None)
        history.append(metrics)
        if _stops(history, config, rank, device):
            break


def _stops(history: list[dict], config: TrainConfig, rank: int, device: torch.device) -> bool:
    """Rank 0's early-stopping decision (only it evaluates), broadcast so that every worker stops together."""
    scores = [row["val_balanced_accuracy"] for row in history] if rank == 0 else []
    stop = rank == 0 and recipe.should_stop(
        scores, config.epochs, config.best_after, config.patience, config.select_window
    )
    decision = torch.tensor([int(stop)], device=device)
    if torch.distributed.is_initialized():
        torch.distributed.broadcast(decision, src=0)
    return bool(decision.item())


def _prepare(net: nn.Module, frozen: bool, learning_rate: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model wrapped for Ray Train (DDP across workers) and Adam over the parameters that train.

    DDP reduces the gradients of the parameters that required them when it wrapped the model, so the model is
    wrapped anew whenever the frozen features thaw.
    """
    net.features.requires_grad_(not frozen)
    model = ray.train.torch.prepare_model(net)
    return model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)


def _optimized(optimizer: torch.optim.Optimizer) -> dict:
    """What the optimizer trains: its parameter count and learning rate."""
    groups = optimizer.param_groups
    return {"trained_parameters": sum(p.numel() for g in groups for p in g["params"]), "learning_rate": groups[0]["lr"]}


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    class_weights: torch.Tensor,
    generator: torch.Generator,
    config: TrainConfig,
    batch_size: int,
    fail: bool,
) -> tuple[float, int, np.ndarray]:
    """One pass over this worker's shard in batches of ``batch_size``; returns the mean training loss, the rows
    seen and the confusion of the stages predicted on the augmented batches (train mode), over all workers."""
    model.train()
    device = class_weights.device
    stages = domain.NUM_STAGES
    totals = torch.zeros(2 + stages * stages, dtype=torch.float64, device=device)  # loss, rows, confusion
    batches = ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=batch_size,
        device=device,
        local_shuffle_buffer_size=config.shuffle_buffer,
        local_shuffle_seed=int(generator.initial_seed() % 2**31),
    )
    for batch in batches:
        if fail:  # a worker dying mid-epoch, for the fault-tolerance test: after the controller has polled the
            time.sleep(FAULT_AFTER_S)  # last epoch's report (every 2 s), as a real failure mid-epoch would
            os._exit(1)
        labels = batch["label"]
        loss, predicted = step.train_step(
            model, optimizer, batch["pixels"], labels, class_weights, generator, config.augment, batch["pct"]
        )
        totals[0] += loss.double() * len(labels)
        totals[1] += len(labels)
        totals[2:] += torch.bincount(labels * stages + predicted, minlength=stages * stages).double()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    loss_sum, rows = totals[:2].tolist()
    confusion = totals[2:].cpu().numpy().astype(np.int64).reshape(stages, stages)
    return loss_sum / max(rows, 1), int(rows), confusion


def _accuracies(confusion: np.ndarray, split: str) -> dict:
    return {
        f"{split}_accuracy": agreement.global_accuracy(confusion),
        f"{split}_balanced_accuracy": agreement.balanced_accuracy(confusion),
        f"{split}_pm1_balanced_accuracy": agreement.pm1_balanced_accuracy(confusion),
    }


def _evaluate(net: nn.Module, class_weights: torch.Tensor, config: TrainConfig, on_gpu: bool) -> dict:
    """Loss and accuracies on the whole validation split (no augmentation); the CDF head's % error too."""
    net.eval()
    device = class_weights.device
    loss_sum, weight_sum, pct_error = 0.0, 0.0, 0.0
    confusion = np.zeros((domain.NUM_STAGES, domain.NUM_STAGES), dtype=np.int64)
    with torch.no_grad():
        for batch in ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=config.batch_size, device=device):
            labels, pct = batch["label"], batch["pct"]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                outputs = net(step.scaled(batch["pixels"])).float()
            loss_sum += step.weighted_losses(outputs, labels, pct, class_weights).sum().item()
            weight_sum += class_weights[labels].sum().item()
            confusion += agreement.confusion_matrix(labels.cpu().numpy(), stage_logits(outputs).argmax(1).cpu().numpy())
            if config.model.head == "cdf":
                pct_error += (cdf.expected_pct(torch.softmax(outputs, dim=1)) - pct).abs().sum().item()
    cdf_metrics = {"val_pct_mae": pct_error / max(int(confusion.sum()), 1)} if config.model.head == "cdf" else {}
    return (
        cdf_metrics
        | _accuracies(confusion, "val")
        | {
            "val_loss": loss_sum / weight_sum,
            "val_rows": int(confusion.sum()),
            "val_confusion": confusion.tolist(),
        }
    )


def _report_with_checkpoint(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    history: list[dict],
    pretrained: dict | None,
    init: dict | None,
) -> None:
    card = checkpoint.ModelCard(
        model_version="",
        model=config.model,
        epoch=history[-1]["epoch"],
        history=history,
        train=_as_json(config),
        preprocess=checkpoint.preprocess_settings(config.model, config.mirror),
        pretrained=pretrained,
        init=init,
    )
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.write(directory, net, card, optimizer)
        ray.train.report(history[-1], checkpoint=ray.train.Checkpoint.from_directory(directory))


def _as_json(config: TrainConfig) -> dict:
    content = dataclasses.asdict(config)
    content.pop("faults")
    return content


def progress(metrics: dict, epochs: int) -> str:
    """One epoch's line: its losses and validation accuracies."""
    frozen = ", frozen features" if metrics["frozen_features"] else ""
    return (
        f"epoch {metrics['epoch'] + 1}/{epochs}{frozen}: train loss {metrics['train_loss']:.3f} "
        f"({metrics['train_rows']} crops, {metrics['train_crops_per_s']:.0f}/s) | "
        f"val loss {metrics['val_loss']:.3f}, accuracy "
        f"{metrics['val_accuracy']:.3f}, balanced {metrics['val_balanced_accuracy']:.3f}, "
        f"+-1 balanced {metrics['val_pm1_balanced_accuracy']:.3f}"
        + (f", % MAE {metrics['val_pct_mae']:.1f}" if "val_pct_mae" in metrics else "")
        + f" ({metrics['val_rows']} crops)"
    )
