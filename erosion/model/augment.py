"""Training augmentation as in Rohrbach et al. 2019, batched on the device that holds the batch.

The paper rotates by up to +-30 deg, stretches width and height by up to 10 %, shears by up to 10 %, flips
horizontally and vertically and zooms in or out by up to 10 %. Here every sample of a batch draws its own
parameters; they compose into one 2x3 affine matrix per sample, and the whole batch is resampled by one
``affine_grid`` and one ``grid_sample`` (bilinear, black outside the crop, like the letterbox padding).
With every strength at zero the matrices are the identity and the batch comes back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erosion.core.settings import setting


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the random transforms; the defaults are the paper's."""

    rotation_deg: float = setting("rotation drawn from [-rotation_deg, +rotation_deg]", 30.0)
    stretch: float = setting("width and height each scaled by a factor in [1 - stretch, 1 + stretch]", 0.1)
    shear: float = setting("horizontal shear factor in [-shear, +shear]", 0.1)
    zoom: float = setting("both axes scaled by one factor in [1 - zoom, 1 + zoom]", 0.1)
    flip_probability: float = setting("of a horizontal flip, and independently of a vertical one", 0.5)


NO_AUGMENTATION = AugmentConfig(rotation_deg=0.0, stretch=0.0, shear=0.0, zoom=0.0, flip_probability=0.0)


def affine_matrices(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices, one random transform per sample, in ``affine_grid``'s normalised coordinates."""
    device = generator.device
    u = torch.rand(n, 4, generator=generator, device=device) * 2 - 1  # rotation, zoom, stretch x, stretch y
    shear = (torch.rand(n, generator=generator, device=device) * 2 - 1) * config.shear
    flips = torch.rand(n, 2, generator=generator, device=device) < config.flip_probability
    angle = u[:, 0] * math.radians(config.rotation_deg)
    zoom = 1 + u[:, 1] * config.zoom
    scale_x = zoom * (1 + u[:, 2] * config.stretch) * torch.where(flips[:, 0], -1.0, 1.0)
    scale_y = zoom * (1 + u[:, 3] * config.stretch) * torch.where(flips[:, 1], -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear @ diag(scale_x, scale_y), written out
    matrices = torch.zeros(n, 2, 3, device=device)
    matrices[:, 0, 0] = cos * scale_x
    matrices[:, 0, 1] = (cos * shear - sin) * scale_y
    matrices[:, 1, 0] = sin * scale_x
    matrices[:, 1, 1] = (sin * shear + cos) * scale_y
    return matrices


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A randomly transformed copy of a float batch (N, C, H, W); each sample gets its own transform."""
    matrices = affine_matrices(images.shape[0], config, generator).to(images.dtype)
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def views(n: int, config: AugmentConfig = AugmentConfig(), seed: int = 0) -> torch.Tensor:
    """(n, 2, 3) fixed transforms for test-time augmentation: the training augmentations, drawn once from a seed.

    Every crop gets the same n views, so its averaged score does not depend on the batch it was scored in.
    """
    return affine_matrices(n, config, torch.Generator().manual_seed(seed))


def transform(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """A float batch (N, C, H, W) resampled by one (2, 3) transform, the same for every sample."""
    matrices = matrix.to(images.device, images.dtype).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
