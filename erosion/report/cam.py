"""Class-activation maps: where in a crop the model found the evidence for a stage (Grad-CAM), as heat maps and PNGs.

Grad-CAM (Selvaraju et al. 2017) weighs each channel of the last convolutional block's feature map by the mean
gradient of the target stage's logit (for the CDF head, the log of the stage's probability) over that channel,
sums the weighted channels, keeps the positive part and upsamples it to the crop. It is as coarse as that block
(the paper's model sees a 150x150 crop there as 4x4 cells), so it shows the region, not the edge, that mattered.
A rheumatologist reads it beside the stages of the joints on which the model and the human raters disagree most
(:func:`most_disagreed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional

from erosion.io import runs, storage
from erosion.model import checkpoint, models
from erosion.model.network import stage_logits
from erosion.registry.preprocess import letterbox
from erosion.report import figures

ELEMENTWISE = (nn.BatchNorm2d, nn.GroupNorm, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Identity)
"""Layers that may follow a convolution within its block without changing the feature map's layout."""


@dataclass(frozen=True)
class Explanation:
    """One explained joint as the report shows it: its stages by rater and its heat map (or why there is none)."""

    joint_id: str
    stages: dict[str, float]  # rater -> stage (NaN where that rater did not rate the joint); the model's first
    file: str = ""  # the PNG's file name in the report's figures/ folder; "" when it could not be made
    png: bytes = b""
    error: str = ""  # "<reason>: <detail>" when the joint could not be explained


def last_conv_block(model: nn.Module) -> nn.Module:
    """The module whose output is the last convolution's feature map after its normalisation and activation.

    That is the last ``Conv2d`` in module order, or the last of the element-wise layers (batch norm, ReLU, ...)
    that directly follow it in the same container: Grad-CAM's feature map is what the block hands on.
    """
    found = None
    for parent in model.modules():
        children = list(parent.children())
        for i, child in enumerate(children):
            if isinstance(child, nn.Conv2d):
                end = i
                while end + 1 < len(children) and isinstance(children[end + 1], ELEMENTWISE):
                    end += 1
                found = children[end]
    if found is None:
        raise ValueError(f"Grad-CAM needs a model with a 2-D convolution; {type(model).__name__} has none.")
    return found


def grad_cam(
    model: nn.Module, pixels: np.ndarray, stages: np.ndarray | None = None, batch_size: int = 64
) -> np.ndarray:
    """(N, S, S) float32 Grad-CAM heat maps in [0, 1] of (N, S, S) uint8 crops, for each crop's target stage.

    The target is ``stages[i]`` (an integer stage per crop), by default the stage the model predicts. Each map is
    divided by its maximum (all zeros where no cell speaks for the stage). The model runs in eval mode, so that
    crops of a batch do not influence one another through batch norm; its mode is restored afterwards, and the
    hook on its last convolutional block is removed.
    """
    if pixels.ndim != 3 or pixels.dtype != np.uint8 or pixels.shape[1] != pixels.shape[2]:
        raise ValueError(f"pixels must be (N, S, S) uint8 crops, got {pixels.dtype} of shape {pixels.shape}.")
    targets = None
    if stages is not None:
        targets = np.asarray(stages, dtype=np.float64)
        if targets.shape != (len(pixels),) or not np.all(np.isfinite(targets) & (targets == np.round(targets))):
            raise ValueError(f"stages must be {len(pixels)} integer stages, one per crop, got {stages!r}.")
        targets = targets.astype(np.int64)
    layer = last_conv_block(model)
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    training = model.training
    model.eval()
    heat = np.zeros(pixels.shape, np.float32)
    try:
        with torch.enable_grad():
            for start in range(0, len(pixels), batch_size):
                chunk = slice(start, start + batch_size)
                captured.clear()
                batch = torch.from_numpy(pixels[chunk]).to(device).unsqueeze(1).float().div_(255).requires_grad_()
                logits = stage_logits(model(batch))  # the CDF head's: log P(stage)
                if len(captured) != 1:
                    raise ValueError(f"the last convolutional block ran {len(captured)} times in one forward pass.")
                if targets is None:
                    target = logits.argmax(dim=1)
                else:
                    target = torch.from_numpy(targets[chunk]).to(device)
                    if target.min() < 0 or target.max() >= logits.shape[1]:
                        raise ValueError(f"stages must lie in 0-{logits.shape[1] - 1}, got {targets[chunk]}.")
                (gradients,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), captured[0])
                weights = gradients.mean(dim=(2, 3), keepdim=True)
                cam = torch.relu((weights * captured[0]).sum(dim=1, keepdim=True))
                cam = functional.interpolate(cam, size=pixels.shape[1:], mode="bilinear", align_corners=False)[:, 0]
                peak = cam.amax(dim=(1, 2), keepdim=True)
                heat[chunk] = torch.where(peak > 0, cam / peak.clamp_min(1e-12), 0).detach().cpu().numpy()
    finally:
        handle.remove()
        model.train(training)
    return heat


def overlay_png(
    pixels: np.ndarray, heat: np.ndarray, title: str, probs: np.ndarray | None = None, rating: int | None = None
) -> bytes:
    """A PNG of the crop in grey beside the same crop with the heat map over it, a colour bar and the title; with
    ``probs``, a third panel of the model's P(stage k), the rated stage (``rating``) outlined."""
    if pixels.ndim != 2 or heat.shape != pixels.shape:
        raise ValueError(f"pixels must be (S, S) and heat of the same shape, got {pixels.shape} and {heat.shape}.")
    panels = 2 if probs is None else 3
    fig = Figure(figsize=(3.8 * panels, 3.9), layout="constrained")  # no pyplot: nothing global, no screen
    axes = fig.subplots(1, panels)
    for ax in axes[:2]:
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=255)
        ax.axis("off")
    shown = axes[1].imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=0.45)
    axes[0].set_title("crop", fontsize=9)
    axes[1].set_title("Grad-CAM over the crop", fontsize=9)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="evidence for the stage (relative)")
    if probs is not None:
        stages = np.arange(len(probs))
        bars = axes[2].bar(stages, probs, color="#4c72b0")
        if rating is not None:
            bars[rating].set_edgecolor("#c44e52")
            bars[rating].set_linewidth(2.5)
        axes[2].set(xticks=stages, ylim=(0, 1), xlabel="stage", ylabel="P(stage)")
        axes[2].set_title("the model's probabilities (rated stage outlined)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return figures.to_png(fig)


def run_crops(
    run: runs.RunManifest,
    registry: str,
    targets: dict[str, int],
    patients: dict[str, str],
    options: storage.StorageOptions,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """The crops of a few joints of a scoring run (``targets``: joint_id -> the stage to explain), letterboxed as
    stored, their Grad-CAM heat maps (``heat_maps``) by the model of each joint's body part, and why a joint has
    none. A model that mirrors a body part's crops sees them mirrored; its maps are mirrored back onto the crop.
    ValueError when the run's models are no longer the versions it was scored with."""
    chosen = models.resolve(run.model, options)
    if chosen.version != run.model_version:
        raise ValueError(
            f"the model at {run.model} is version {chosen.version}, but the run was scored with version"
            f" {run.model_version}: its heat maps would explain another model."
        )
    found = crops(registry, list(targets), options)
    pixels, parts, errors = {}, {}, {}
    for joint_id in targets:
        image, part = found.get(joint_id, (None, None))
        if joint_id not in found:
            errors[joint_id] = f"not in the registry: {registry}"
        elif chosen.card(part) is None:
            errors[joint_id] = f"no model for body part: {part}"
        else:
            try:
                pixels[joint_id], parts[joint_id] = letterbox(image or b"", chosen.input_size), part
            except ValueError as error:
                errors[joint_id] = str(error)
    heat, coverage = {}, chosen.coverage()
    for part in dict.fromkeys(parts.values()):
        ids = [j for j in parts if parts[j] == part]
        mirror = coverage[part]["mirror"]
        seen = np.stack([pixels[j][:, ::-1] if mirror else pixels[j] for j in ids])
        stages = np.array([targets[j] for j in ids])
        maps = heat_maps(chosen.parts[part], np.ascontiguousarray(seen), stages, [patients[j] for j in ids], options)
        heat |= {j: (m[:, ::-1] if mirror else m) for j, m in zip(ids, maps, strict=True)}
    return pixels, heat, errors


def crops(registry: str, joint_ids: list[str], options: storage.StorageOptions) -> dict[str, tuple[bytes | None, str]]:
    """The encoded crops and body parts of a few joints: joint ids first, then images only from the files that
    hold them."""
    wanted = pa.array(sorted(set(joint_ids)), pa.string())
    fs, _ = storage.filesystem(registry, options)
    found: dict[str, tuple[bytes | None, str]] = {}
    for file in storage.parquet_files(registry, options):
        ids = storage.iter_file_batches(fs, file, ["joint_id"])
        if not any(pc.any(pc.is_in(batch.column("joint_id"), wanted)).as_py() for _, batch in ids):
            continue
        for _, batch in storage.iter_file_batches(fs, file, ["joint_id", "body_part", "image"], batch_size=256):
            rows = batch.filter(pc.is_in(batch.column("joint_id"), wanted))
            pairs = zip(rows.column("image").to_pylist(), rows.column("body_part").to_pylist(), strict=True)
            found |= dict(zip(rows.column("joint_id").to_pylist(), pairs, strict=True))
        if len(found) == len(wanted):
            break
    return found


def heat_maps(
    model: str, pixels: np.ndarray, stages: np.ndarray, patients: list[str], options: storage.StorageOptions
) -> np.ndarray:
    """Grad-CAM of each crop (``grad_cam``) by the model that scored it: a single model, or a fold set's fold model
    of the crop's patient (the first fold model for a patient the set never saw)."""
    members = checkpoint.load_members(model, options=options)
    table = checkpoint.read_patients(model, options)
    folds = {}
    if len(members) > 1 and table is not None and "fold" in table.column_names:
        folds = dict(zip(table["patient_id"].to_pylist(), table["fold"].to_pylist(), strict=True))
    which = np.array([folds.get(p, 0) for p in patients], dtype=np.int64)
    heat = np.zeros(pixels.shape, np.float32)
    for k in np.unique(which):
        rows = which == k
        heat[rows] = grad_cam(members[k][0], pixels[rows], np.asarray(stages)[rows])
    return heat


def most_disagreed(stages: pd.DataFrame, model: str, humans: list[str], n: int) -> list[str]:
    """The ``n`` joint_ids (the index of ``stages``) whose model stage is furthest from the humans' mean stage.

    Joints no human rated, or the model did not score, are skipped; ties go to the smaller joint_id, so the choice
    is the same on every run of the same stages.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    if n == 0 or not humans:
        return []
    gap = (stages[model] - stages[humans].mean(axis=1, skipna=True)).abs().round(9)  # 9 digits: equal gaps tie
    frame = pd.DataFrame({"joint_id": stages.index.astype(str), "gap": gap.to_numpy()}).dropna()
    frame = frame.sort_values(["gap", "joint_id"], ascending=[False, True], kind="stable")
    return frame["joint_id"].head(n).tolist()
