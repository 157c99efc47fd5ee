"""Synthetic radiograph crops of single joints (finger PIP and MCP, toe MTP, the wrist) with a known extent of
bone erosion.

Why: training and testing the scorer needs labelled crops that a CNN sees as joint radiographs, not as
labelled noise, so each crop is drawn as an X-ray projection of a simple 3-D anatomy.

Anatomy: each bone is a hollow cylinder (a dense cortical shell around a less dense, textured trabecular
core) whose radius varies along the finger (shaft, flared metaphysis, head or base). The proximal bone
ends in a convex head, the distal one in a slightly concave base, with a dark joint space between them.
A radiograph sums the path length through each tissue, so the shell shows as a bright rim at the bone's
edges and the subchondral plate as a bright line along each articular surface. Soft tissue is a wider
cylinder, a little swollen at the joint, on a dark background. The anatomy (one of 16 variants per joint
kind, scaled), exposure, tone curve, noise, blur, rotation, size, aspect ratio and centring vary per crop.
An MTP joint is drawn as an MCP with a rounder, larger metatarsal head and slimmer shafts; the wrist as the
radiocarpal joint: the broad, nearly flat end of the radius against the carpal row (a broad bone without a
shaft) across a wider joint space; the first ray (thumb, big toe) is wider.

Erosion: the articular surfaces of both bones together are cut by "bites" whose total length is
``erosion_pct`` % of the surfaces, preferring the margins (the bare areas), deeper as the percentage
grows. In a bite the subchondral plate is gone and the bone fades in slowly behind the cut (less dense,
ill-defined); near 100 % both bone ends are flattened and ragged.

Speed (about 2,000 crops a second on one core): what varies along one axis of the finger only (surfaces,
erosion, radii) lives on 1-D grids that each pixel looks up, the trabecular texture is a low-rank matrix
product, the full-size arrays share one allocation (fresh memory costs page faults), and crops over 128 px
a side are drawn at half resolution and interpolated (the noise is added at full resolution).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from erosion.core import domain

_LUT = 512  # samples of each 1-D profile
_U = np.linspace(-3.0, 3.0, _LUT)  # across the finger, in joint units (1: about half the crop's shorter side)
_V = np.linspace(-4.5, 2.5, _LUT)  # along it from the joint line, towards the wrist: > 0 is the proximal bone
_LOWS = np.float32([_U[0], _V[0]])[:, None, None]
_SCALES = np.float32([(_LUT - 1) / (_U[-1] - _U[0]), (_LUT - 1) / (_V[-1] - _V[0])])[:, None, None]
_SURFACE = slice(*np.searchsorted(_U, [-1.1, 1.1]))  # the part of _U that articular surfaces can cover
# Raggedness of the floors of big bites: a fixed irregular profile, of which each crop takes a random window.
_RAGGED = (1.0 + 0.2 * np.sin(np.arange(2 * _LUT) * 0.23) * np.sin(np.arange(2 * _LUT) * 0.061)).astype(np.float32)
_SHELL, _PLATE, _CORE = 7.0, 3.3, 2.0  # X-ray densities relative to soft tissue: cortex, subchondral plate, core
# Per joint kind: half-widths of the proximal head and shaft, height of the head's rounded cap, half-widths of
# the distal base and shaft, curvature of the joint line, width of the joint space.
_KINDS = {
    "mcp": (0.56, 0.32, 0.24, 0.55, 0.36, 0.30, 0.11),
    "pip": (0.47, 0.29, 0.10, 0.50, 0.29, 0.12, 0.08),
    "mtp": (0.62, 0.28, 0.30, 0.52, 0.29, 0.34, 0.10),
    "wrist": (0.80, 0.60, 0.06, 0.78, 0.74, 0.06, 0.15),
}
_JOINTS = domain.JOINTS


def render_joint(rng: np.random.Generator, erosion_pct: float, joint: str) -> np.ndarray:
    """One synthetic radiograph crop of a joint (``domain.JOINTS``): a 2-D float32 array in [0, 1] (1 = bright bone)."""
    if joint not in _JOINTS:
        raise ValueError(f"joint must be one of {', '.join(_JOINTS)}; got {joint!r}.")
    if not 0.0 <= erosion_pct <= 100.0:
        raise ValueError(f"erosion_pct must lie in [0, 100]; got {erosion_pct!r}.")
    draw = _Draws(rng)
    head, base, curve, surfaces, radii = _ANATOMIES[domain.joint_type(joint).lower()][int(draw(0.0, len(_VARIANTS)))]
    rows, columns, pixel, shape = _frame(draw, draw(0.9, 1.1) * (1.1 if joint.endswith("1") else 1.0))  # first ray
    work = np.empty((9, rows.shape[1], columns.shape[1]), np.float32)  # one allocation for the full-size arrays
    frame, u2, looked_up, chords = work[0:2], work[2], work[3:6], work[6:9]

    u, along = np.add(rows[:, :, None], columns[:, None, :], out=frame)  # across, along the finger
    np.square(u, out=u2)
    along -= np.multiply(u2, curve, out=looked_up[0])  # from the curved joint line
    index = np.multiply(np.subtract(frame, _LOWS, out=looked_up[:2]), _SCALES, out=looked_up[:2]).astype(np.intp)
    np.add(index[0], _LUT, out=index[0], where=along < 0)  # the distal bone's profiles follow the proximal one's
    _profiles(draw, surfaces, head, base, erosion_pct / 100.0, pixel).take(index[0], axis=1, mode="clip", out=looked_up)
    radii.take(index[1], axis=1, mode="clip", out=chords)
    del index  # freed before the texture and the exposure allocate

    surface, end, shell = looked_up  # end: sharpness of the bone's end; shell: density of cortex and plate
    depth = np.abs(along, out=along)
    depth -= surface  # > 0 inside a bone end, behind its articular surface
    end *= depth
    end += 0.5
    np.clip(end, 0.0, 1.0, out=end)  # the bone behind the surface: a soft edge, a slow fade behind erosion
    depth *= np.float32(_PLATE / max(0.03, 1.5 * pixel))
    shell -= depth
    np.clip(shell, _SHELL, _SHELL + _PLATE, out=shell)  # the plate: a thin layer under an intact surface
    chords -= u2
    bone, core, tissue = np.sqrt(np.maximum(chords, 0.0, out=chords), out=chords)  # path lengths through them
    bone *= shell
    core *= _texture(draw, rows, columns, out=u2)  # trabecular bone in place of cortex
    bone += core
    bone *= end
    bone += tissue
    if bone.shape != shape:  # drawn at half resolution
        bone = _double(bone)[: shape[0], : shape[1]]
    return _expose(draw, bone)


def _anatomy(dimensions: tuple[float, ...], wide: float, round_: float, cortex: float, margin: float) -> tuple:
    """One joint's shape from its kind's ``dimensions``, ``wide`` times as wide, ``round_`` times as round: head and
    base half-widths, the joint line's curvature, then along u the articular surfaces' distance from the joint line
    (rows: proximal, distal), along v the squared radii of bone, core (inside a ``cortex`` thick shell) and soft
    tissue (``margin`` wider than the bones, and swollen at the joint)."""
    head, shaft, cap, base, base_shaft, curve, gap = dimensions
    head, base, cap, curve = head * wide, base * wide, cap * round_, curve * round_
    widths, caps = np.array([[head], [base]]), np.array([[cap], [0.04]])
    surfaces = gap / 2 + caps - caps * np.sqrt(np.clip(1.0 - (_U / widths) ** 2, 0.0, 1.0))  # round corners
    start, end, shafts = np.array([[cap + 0.25, 0.12], [head, base], [shaft, base_shaft]])[:, :, None]
    flare = np.exp(-((np.clip(np.abs(_V) - start, 0.0, 9.0) / 0.33) ** 2))  # rows: proximal, distal bone
    outer = shafts + (end - shafts) * flare
    inner = outer - cortex * (1.0 - 0.6 * flare)  # the cortex thins towards the bone ends
    tissue = max(head, base) + margin * (1.0 + 0.3 * np.exp(-((_V / 0.4) ** 2)))
    radii = np.where(_V > 0, np.array([outer[0], inner[0], tissue]), np.array([outer[1], inner[1], tissue]))
    return head, base, curve, surfaces.astype(np.float32), np.square(radii, dtype=np.float32)


# 16 variants per kind: narrow or wide, flat or round, thin or thick cortex, thin or thick soft tissue.
_VARIANTS = tuple(itertools.product((0.93, 1.07), (0.8, 1.2), (0.05, 0.075), (0.13, 0.28)))
_ANATOMIES = {kind: [_anatomy(dimensions, *variant) for variant in _VARIANTS] for kind, dimensions in _KINDS.items()}


class _Draws:
    """Uniform random numbers from ``rng``, drawn 64 at a time (a call per number costs more than a crop)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.pool = rng, []

    def __call__(self, low: float, high: float) -> float:
        """One number, uniform in [low, high)."""
        if not self.pool:
            self.pool = self.rng.random(64).tolist()
        return low + (high - low) * self.pool.pop()


def _frame(draw: _Draws, widen: float) -> tuple:
    """The joint's frame on the crop: u across the finger (bones ``widen`` times as wide), v along it, each the
    sum of a term per row (rows) and a term per column (columns), on a grid one pixel larger than the crop each
    way (the blur trims it), of every other pixel if the crop is large; then that grid's pixel size and the
    shape at full resolution. The crop is roughly centred on the joint, rotated by up to 20 degrees, each side
    60-220 px, its aspect ratio (width / height) 0.6-1.6."""
    aspect = draw(0.6, 1.6)
    longer = draw(60.0 * max(aspect, 1.0 / aspect), 220.0)
    height, width = (longer / aspect, longer) if aspect >= 1.0 else (longer, longer * aspect)
    height, width = round(height), round(width)
    step = 2 if min(height, width) > 128 else 1
    pixel = draw(1.7, 2.3) / min(height, width)
    y = np.arange((height + step - 1) // step + 1, dtype=np.float32) * step - np.float32(height * draw(0.45, 0.55))
    x = np.arange((width + step - 1) // step + 1, dtype=np.float32) * step - np.float32(width * draw(0.45, 0.55))
    angle = math.radians(draw(-20.0, 20.0))
    cos, sin = math.cos(angle) * pixel, math.sin(angle) * pixel
    rows = np.multiply.outer(np.float32([sin / widen, cos]), y)
    columns = np.multiply.outer(np.float32([cos / widen, -sin]), x)
    return rows, columns, pixel * step, (height + 1, width + 1)


def _profiles(
    draw: _Draws, surfaces: np.ndarray, head: float, base: float, fraction: float, pixel: float
) -> np.ndarray:
    """Along u, for the proximal then the distal side: distance of the eroded articular surface from the joint
    line; sharpness of the bone's end (1 / width); density of cortex with subchondral plate at the surface."""
    lost = _erosion(draw, head, base, fraction)
    eroded = np.minimum(lost * 1000.0, 1.0)
    profiles = np.empty((3, 2, _LUT), np.float32)
    np.add(surfaces, lost + draw(-0.02, 0.02), out=profiles[0])  # a wider or narrower joint space
    np.reciprocal(eroded * (0.05 + 0.15 * fraction) + 1.5 * pixel, out=profiles[1])
    np.subtract(_SHELL + _PLATE, _PLATE * eroded, out=profiles[2])  # the plate goes with the erosion
    return profiles.reshape(3, 2 * _LUT)


def _erosion(draw: _Draws, head: float, base: float, fraction: float) -> np.ndarray:
    """Depth of bone lost along u on the head (row 0) and base (row 1): bites, non-overlapping, whose total length
    is ``fraction`` of both surfaces, preferring the margins; deeper, flatter and more ragged with the fraction."""
    total = fraction * 2.0 * (head + base)
    on_head = min(max(total * draw(0.2, 0.8), total - 2.0 * base), 2.0 * head)
    bites = []  # (on the head, on the base, centre, half-length, depth)
    for side, half_width, length in ((0, head, on_head), (1, base, total - on_head)):
        if length < 1e-3:
            continue
        count = 1 + int(draw(0.0, 3.0))
        sizes = [draw(0.3, 1.0) for _ in range(count)]
        gaps = [draw(0.0, 1.0) ** 2] + [draw(0.0, 1.0) for _ in range(count - 1)] + [draw(0.0, 1.0) ** 2]
        size_scale, gap_scale = length / sum(sizes), (2.0 * half_width - length) / sum(gaps)
        position = -half_width  # short gaps at the margins: erosions start at the bare areas
        for size, gap in zip(sizes, gaps[:-1], strict=True):
            half = size * size_scale / 2.0
            position += gap * gap_scale + half
            depth = min((0.03 + 0.3 * fraction) * draw(0.5, 1.2), 1.2 * half)
            bites.append((side == 0, side == 1, position, half, depth))
            position += half
    lost = np.zeros((2, _LUT), np.float32)
    if bites:
        bites = np.array(bites)
        centre, half, depth = bites[:, 2:].T[:, :, None]
        shape = np.maximum(1.0 - np.square((_U[_SURFACE] - centre) / half), 0.0)  # round, flat-bottomed as they merge
        lost[:, _SURFACE] = bites[:, :2].T @ np.minimum(shape * (depth * (1.0 + fraction)), depth)
        start = int(draw(0.0, _LUT))
        lost *= _RAGGED[start : start + _LUT]
    return lost


def _texture(draw: _Draws, rows: np.ndarray, columns: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Density of trabecular bone less that of the cortex it replaces, with a texture of plane waves striped mostly
    along the finger, as a matrix product: w cos(r + c + p) = cos(r) w cos(c + p) - sin(r) w sin(c + p)."""
    wavelength, across, phase, weight = draw.rng.random((4, 13), dtype=np.float32)
    frequency = 2.0 * np.pi / (0.025 + 0.055 * wavelength)
    waves = np.array([frequency, frequency * (1.6 * across - 0.8)])  # wave vectors in (u, v)
    waves[:, 0], phase[0], weight[0] = 0.0, 0.0, (_CORE - _SHELL) / 0.2  # wave 0: a constant
    angles = np.hstack([waves.T @ rows, waves.T @ columns + np.float32(6.3) * phase[:, None]])
    trig = np.vstack([np.cos(angles), np.sin(angles)])
    trig[:, rows.shape[1] :] *= np.concatenate([weight, -weight])[:, None] * 0.2
    return np.matmul(trig[:, : rows.shape[1]].T, trig[:, rows.shape[1] :], out=out)


def _double(half: np.ndarray) -> np.ndarray:
    """``half`` at twice the resolution each way, linearly interpolated."""
    rows = np.empty((2 * half.shape[0] - 1, half.shape[1]), np.float32)
    rows[::2] = half
    np.add(half[1:], half[:-1], out=rows[1::2])
    rows[1::2] *= 0.5
    full = np.empty((rows.shape[0], 2 * rows.shape[1] - 1), np.float32)
    full[:, ::2] = rows
    np.add(rows[:, 1:], rows[:, :-1], out=full[:, 1::2])
    full[:, 1::2] *= 0.5
    return full


def _expose(draw: _Draws, density: np.ndarray) -> np.ndarray:
    """The crop from ``density`` (one pixel larger each way): exposure (gain, offset), a 2 x 2 box blur, a
    gamma-like tone curve and quantum-like noise."""
    density *= np.float32(draw(0.05, 0.072))  # a quarter of the gain: the blur sums 4 pixels
    density += np.float32(draw(0.003, 0.02))
    half = density[1:] + density[:-1]
    image = np.clip(half[:, 1:] + half[:, :-1], 0.0, 1.0)
    bend = np.float32(draw(-0.6, 0.6))
    image *= (1.0 + bend) - bend * image  # x + bend x (1 - x): brighter or darker mid-tones, like a gamma
    noise = draw.rng.bit_generator.random_raw(image.size // 8 + 1).view(np.int8)[: image.size].reshape(image.shape)
    noise = np.multiply(noise, np.float32(draw(0.015, 0.045) / 74.0))  # 74: the standard deviation of a byte
    noise *= image + 0.3  # quantum noise: stronger where fewer photons arrive (bright)
    image += noise
    return np.clip(image, 0.0, 1.0, out=image)
