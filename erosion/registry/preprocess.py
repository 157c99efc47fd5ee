"""Pre-processing shared by training and scoring: decode a crop and letterbox it to a square, as uint8.

JPEG or PNG, 8- or 16-bit, grey or colour, any size: the crop becomes grey-scale (16-bit values are
mapped to 8 bits by 65535 -> 255), is scaled so that its longer side fills ``size`` keeping its aspect
ratio, and is padded with black on the short side, never stretched. Scaling to [0, 1] happens later,
on the device that holds the batch, so batches travel as compact uint8.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

INPUT_SIZE = 150
FORMATS = ("JPEG", "PNG")
"""The encodings the registry contract admits."""


def letterbox(data: bytes, size: int = INPUT_SIZE) -> np.ndarray:
    """A (size, size) uint8 grey-scale image from an encoded crop.

    Raises ValueError("<reason>: <detail>") when it cannot: empty image, unsupported format, cannot decode image.
    """
    if not data:
        raise ValueError("empty image: 0 bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in FORMATS:
                raise ValueError(f"unsupported format: {image.format} (expected JPEG or PNG)")
            image.load()
            grey = _to_grey(image)
    except UnidentifiedImageError:
        raise ValueError(f"cannot decode image: not a JPEG or PNG ({len(data)} bytes)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode image: {error}") from None
    scale = size / max(grey.size)
    width, height = max(1, round(grey.width * scale)), max(1, round(grey.height * scale))
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top : top + height, left : left + width] = np.asarray(grey.resize((width, height), Image.BILINEAR))
    return canvas


def letterbox_batch(images: Sequence[bytes | None], size: int = INPUT_SIZE) -> tuple[np.ndarray, list[str | None]]:
    """Letterbox many crops: (N, size, size) uint8 pixels (black where a crop failed) and each crop's error."""
    pixels = np.zeros((len(images), size, size), dtype=np.uint8)
    errors: list[str | None] = []
    for i, data in enumerate(images):
        try:
            pixels[i] = letterbox(data or b"", size)
            errors.append(None)
        except ValueError as error:
            errors.append(str(error))
    return pixels, errors


def _to_grey(image: Image.Image) -> Image.Image:
    """An 8-bit grey image ("L") from any PIL mode: 16-bit by scaling, colour by luminance."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float32)
        return Image.fromarray(np.clip(values / 257.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "L":
        return image
    return image.convert("RGB").convert("L")
