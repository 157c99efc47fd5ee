"""The paper's CNN (Rohrbach et al. 2019): six conv blocks, two dense blocks, six Ratingen stages.

Each conv block is two 3x3 convolutions (32, 32, 64, 64, 128, 128 filters by block), each followed by batch
norm and ReLU, then 2x2 max pooling. At 150x150 input this leaves 2x2x128 features; two dense blocks
(512 and 256 units: dense, batch norm, ReLU, dropout) and a six-way output with batch norm follow. With
the default config it has exactly 1,072,818 trainable parameters, as published. ``width`` and
``input_size`` shrink it for CPU runs (tests, demo), keeping the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from erosion.domain import NUM_STAGES

BLOCK_FILTERS = (32, 32, 64, 64, 128, 128)


@dataclass(frozen=True)
class ModelConfig:
    """The architecture's knobs; the defaults are the paper's."""

    input_size: int = 150  # crops are letterboxed to input_size x input_size
    width: float = 1.0  # multiplies every filter and unit count (0.5: half width)
    dropout: float = 0.5  # in the two dense blocks


class ErosionCNN(nn.Module):
    """Maps a batch of (N, 1, S, S) crops scaled to [0, 1] to (N, 6) stage logits."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 1, config.input_size
        for filters in BLOCK_FILTERS:
            out = max(1, round(filters * config.width))
            for conv_in in (channels, out):
                layers += [nn.Conv2d(conv_in, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            channels, size = out, size // 2
        if size < 1:
            raise ValueError(f"input_size must be >= 64 for six 2x2 poolings, got {config.input_size}.")
        self.features = nn.Sequential(*layers)
        units = [channels * size * size, round(512 * config.width), round(256 * config.width)]
        dense: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(units, units[1:], strict=False):
            dense += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
        dense += [nn.Linear(units[-1], NUM_STAGES), nn.BatchNorm1d(NUM_STAGES)]
        self.head = nn.Sequential(*dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, as Keras counts them (batch norm's running statistics are not trainable)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def probabilities(model: nn.Module, pixels: np.ndarray) -> np.ndarray:
    """(N, 6) float32 stage probabilities of (N, S, S) uint8 crops; scaled to [0, 1] on the model's device.

    The model must be in eval mode. On a GPU the batch runs channels-last under bf16 autocast (as in training).
    """
    device = next(model.parameters()).device
    batch = torch.from_numpy(pixels).to(device, non_blocking=True).unsqueeze(1).float().div_(255)
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(batch.contiguous(memory_format=torch.channels_last))
        else:
            logits = model(batch)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
