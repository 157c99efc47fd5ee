"""Synthetic radiograph crops of finger joints, drawn with known erosion, for the synthetic registry.

A crop is drawn in a frame whose y axis runs along the finger: the proximal bone (metacarpal or phalanx)
ends in a convex head above the joint space, the distal phalanx starts below it with a base that cups the
head. Each bone has a bright cortical rim around a less dense, textured interior; soft tissue surrounds
both, on a dark background. Exposure, noise, blur, rotation, size and aspect ratio vary per crop.

Erosion removes bone at the two articular surfaces: a few "bites" whose total length is the eroded
fraction of the surfaces and whose depth grows with it. Inside a bite the cortical rim is gone and the
bone behind it is thinned, so a reader (or a CNN) sees the loss of the rim and bone that the Ratingen
method scores. At 100 % both bone ends are destroyed along their whole width.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_BIG = {"mcp": 1.0, "pip": 0.8}  # relative bone width: metacarpal heads are wider than phalangeal ones


def render_joint(rng: np.random.Generator, erosion_pct: float, joint: str) -> np.ndarray:
    """One synthetic radiograph crop of a finger joint: a 2-D float32 array in [0, 1] (1 = bright bone)."""
    kind, finger = joint[:3], joint[3:]
    if kind not in _BIG or finger not in {"1", "2", "3", "4", "5"}:
        raise ValueError(f"joint must be one of pip1..pip5 or mcp1..mcp5, got {joint!r}.")
    if not 0.0 <= erosion_pct <= 100.0:
        raise ValueError(f"erosion_pct must lie in [0, 100], got {erosion_pct}.")
    fraction = erosion_pct / 100.0
    height = int(rng.integers(60, 201))
    width = int(np.clip(round(height * rng.uniform(0.6, 1.6)), 40, 240))
    x, y = _grid(rng, height, width)

    size = _BIG[kind] * (1.15 if finger == "1" else 1.0) * rng.uniform(0.85, 1.15)
    head, shaft = 0.42 * size, 0.26 * size  # half-widths of the proximal head and shaft
    base = 0.38 * size  # half-width of the distal base
    gap = rng.uniform(0.035, 0.07) * (1.0 - 0.5 * fraction)  # the joint space narrows as the joint is destroyed
    curve = rng.uniform(0.5, 1.0)  # curvature of the articular surfaces
    cortex = rng.uniform(0.03, 0.05)  # thickness of the cortical rim

    surface = -curve * x**2  # both articular surfaces follow this curve, offset by the joint space
    prox_width = shaft + (head - shaft) / (1.0 + np.exp(-(y + 0.35) / 0.08))
    dist_width = 0.7 * base + 0.3 * base / (1.0 + np.exp((y - 0.35) / 0.08))
    prox_lost, dist_lost = _bites(rng, x, fraction, head), _bites(rng, x, fraction, base)  # erosion, by x
    bones = (  # (distance to the side, distance to the eroded articular surface, depth of erosion)
        (prox_width - np.abs(x), surface - gap - prox_lost - y, prox_lost),
        (dist_width - np.abs(x), y - (surface + gap + dist_lost), dist_lost),
    )

    tissue_width = rng.uniform(0.55, 0.8) * size / 0.9
    image = 0.06 + 0.22 * _smooth_step(tissue_width - np.abs(x) + 0.05 * np.sin(3 * y), 0.06)
    texture = _texture(rng, height, width)
    for side, end, lost in bones:
        depth = np.minimum(side, end)  # > 0 inside the bone
        eroded = np.clip(lost / 0.02, 0.0, 1.0) * (1.0 - _smooth_step(end - 0.12, 0.08))  # near an erosion
        inside = _smooth_step(depth, 0.008) * (1.0 - 0.45 * eroded)  # bone behind an erosion is thinned
        rim = _smooth_step(depth, 0.008) * (1.0 - _smooth_step(depth - cortex, 0.01)) * (1.0 - eroded)
        image += inside * (0.32 + 0.12 * texture) + rim * 0.35
    return _expose(rng, image)


def _grid(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the joint's frame: y along the finger, the joint space near y = 0."""
    scale = 2.0 / height
    rows = (np.arange(height, dtype=np.float32) - height / 2 + rng.normal(0, 0.04 * height)) * scale
    cols = (np.arange(width, dtype=np.float32) - width / 2 + rng.normal(0, 0.04 * width)) * scale
    angle = np.deg2rad(rng.uniform(-20.0, 20.0))
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * cols[None, :] + s * rows[:, None], -s * cols[None, :] + c * rows[:, None]


def _bites(rng: np.random.Generator, x: np.ndarray, fraction: float, half_width: float) -> np.ndarray:
    """Depth of bone lost along one articular surface, as a function of x; covers ``fraction`` of its width."""
    lost = np.zeros_like(x)
    if fraction <= 0.0:
        return lost
    count = int(rng.integers(1, 4))
    lengths = rng.dirichlet(np.ones(count)) * fraction * 2.0 * half_width
    deepest = 0.04 + 0.22 * fraction
    for length in lengths:
        half = max(length / 2.0, 0.012)
        centre = rng.uniform(-half_width + half, half_width - half) if half < half_width else 0.0
        inside = np.clip(1.0 - ((x - centre) / half) ** 2, 0.0, None)
        lost = np.maximum(lost, deepest * rng.uniform(0.6, 1.0) * np.sqrt(inside))
    if fraction > 0.8:  # a destroyed joint: the whole surface is ragged and flattened
        lost = np.maximum(lost, deepest * (fraction - 0.8) * 5.0 * (0.7 + 0.3 * np.sin(40.0 * x + rng.uniform(0, 6))))
    return lost


def _smooth_step(distance: np.ndarray, softness: float) -> np.ndarray:
    """0 outside, 1 inside, a soft edge of width ``softness`` (a blurred boundary, as X-rays show it)."""
    return np.clip(distance / softness + 0.5, 0.0, 1.0)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Trabecular texture: coarse random noise upsampled to the crop, in about [-1, 1]."""
    coarse = rng.standard_normal((max(height // 8, 2), max(width // 8, 2))).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR))


def _expose(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Exposure (gain, offset, gamma), blur and quantum-like noise; the result clipped to [0, 1]."""
    image = image * rng.uniform(0.75, 1.2) + rng.uniform(-0.05, 0.1)
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    image = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1) + np.roll(image, (1, 1), (0, 1))) / 4.0
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(0.01, 0.035))
    return np.clip(image, 0.0, 1.0).astype(np.float32)
