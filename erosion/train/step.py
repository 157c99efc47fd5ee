"""The pure training step, shared by Ray Train's workers and the benchmark: scale and augment a uint8 batch on its
device, then one Adam step on the class-weighted loss (cross-entropy for the stages head, CRPS for the CDF head).

No Ray here: the benchmark and the tests call the step in a plain process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from erosion.model import cdf
from erosion.model.augment import AugmentConfig, augment
from erosion.model.network import stage_logits


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor,
    generator: torch.Generator,
    augmentation: AugmentConfig | None,
    pct: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a uint8 batch: scale and augment on its device, then the class-weighted loss.

    ``pct`` (the rated % eroded) is what the CDF head learns; the stages head needs only ``labels``. On a GPU the
    forward pass runs under bf16 autocast; on every device the images are channels-last (as the model should be:
    on a CPU too, the reduced CNN's step is 1.5-1.9x as fast). Returns the loss and the stages predicted.
    """
    on_gpu = pixels.device.type == "cuda"
    images = scaled(pixels)
    if augmentation is not None:
        images = augment(images, augmentation, generator)
    with torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=on_gpu):
        outputs = model(images)
    loss = weighted_losses(outputs, labels, pct, class_weights).sum() / class_weights[labels].sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), stage_logits(outputs.detach()).argmax(1)


def weighted_losses(
    outputs: torch.Tensor, labels: torch.Tensor, pct: torch.Tensor | None, class_weights: torch.Tensor
) -> torch.Tensor:
    """(N,) each crop's loss times its stage's class weight: cross-entropy for the stages head's six outputs,
    CRPS at the rated % for the CDF head's 101. Divided by the summed weights, their sum is the batch's loss."""
    if outputs.shape[1] == cdf.BINS:
        return cdf.crps(outputs, pct) * class_weights[labels]
    return F.cross_entropy(outputs.float(), labels, weight=class_weights, reduction="none")


def scaled(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, S, S) -> float (N, 1, S, S) in [0, 1], channels-last, on the batch's device."""
    return pixels.unsqueeze(1).float().div_(255.0).contiguous(memory_format=torch.channels_last)
