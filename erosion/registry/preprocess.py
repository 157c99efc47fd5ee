"""Pre-processing shared by training and scoring: decode a crop and letterbox it to a square, as uint8.

JPEG or PNG, 8- or 16-bit, grey or colour, any size: the crop becomes grey-scale (16-bit values are
mapped to 8 bits by 65535 -> 255), is scaled so that its longer side fills ``size`` keeping its aspect
ratio, and is padded with black on the short side, never stretched. A model trained with ``mirror: right`` in
its pre-processing settings sees right hands and feet flipped left-right, in the left orientation, so that one
model learns one anatomy (``domain.mirrored``). Scaling to [0, 1] happens later, on the device that holds the batch,
so batches travel as compact uint8.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

INPUT_SIZE = 150
FORMATS = ("JPEG", "PNG")
"""The encodings the registry contract admits."""


def letterbox(data: bytes, size: int = INPUT_SIZE, mirror: bool = False) -> np.ndarray:
    """A (size, size) uint8 grey-scale image from an encoded crop, flipped left-right with ``mirror``.

    Raises ValueError("<reason>: <detail>") when it cannot: empty image, unsupported format, cannot decode image.
    """
    return _fit(_to_grey(_open(data)), size, mirror)


def letterbox_measured(data: bytes, size: int = INPUT_SIZE, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``letterbox``, and the crop's statistics as stored (``crop_statistics``): what scoring's monitoring reads."""
    image = _open(data)
    return _fit(_to_grey(image), size, mirror), crop_statistics(image)


def crop_statistics(image: Image.Image) -> np.ndarray:
    """A decoded crop's statistics as stored, in the order of ``schema.CROP``'s fields: its height and width in
    pixels, its bit depth (8 or 16), the mean and the standard deviation of its grey values as a share of the bit
    depth's maximum, and the share of its pixels at either end of the range (0 or the maximum: clipped by the
    exposure or the export). Colour crops by their luminance."""
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.float64) / 65535.0
        clipped = np.count_nonzero((values <= 0.0) | (values >= 1.0)) / max(values.size, 1)
        return np.array([image.height, image.width, 16, values.mean(), values.std(), clipped])
    counts = np.array(_to_grey(image).histogram(), dtype=np.float64)  # 8 bits: no float copy of the pixels
    total = counts.sum()
    mean, square = _LEVEL_POWERS @ counts / total
    std = math.sqrt(max(square - mean * mean, 0.0))
    return np.array([image.height, image.width, 8, mean, std, (counts[0] + counts[255]) / total])


_LEVEL_POWERS = np.stack([np.arange(256) / 255.0, (np.arange(256) / 255.0) ** 2])
"""The 8-bit grey levels as shares of 255, and their squares: the histogram's mean and mean square in one product."""


def _open(data: bytes) -> Image.Image:
    """The crop decoded (pixels loaded), or ValueError("<reason>: <detail>")."""
    if not data:
        raise ValueError("empty image: 0 bytes")
    grey = _grey_jpeg(data)
    if grey is not None:
        return grey
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in FORMATS:
            raise ValueError(f"unsupported format: {image.format} (expected JPEG or PNG)")
        image.load()
        return image
    except UnidentifiedImageError:
        raise ValueError(f"cannot decode image: not a JPEG or PNG ({len(data)} bytes)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode image: {error}") from None


def _fit(grey: Image.Image, size: int, mirror: bool = False) -> np.ndarray:
    """The grey crop scaled so that its longer side fills ``size``, padded with black to a square (flipped
    left-right with ``mirror``)."""
    scale = size / max(grey.size)
    width, height = max(1, round(grey.width * scale)), max(1, round(grey.height * scale))
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top : top + height, left : left + width] = np.asarray(grey.resize((width, height), Image.BILINEAR))
    return np.ascontiguousarray(canvas[:, ::-1]) if mirror else canvas


def letterbox_batch(
    images: Sequence[bytes | None], size: int = INPUT_SIZE, mirror: Sequence[bool] | None = None
) -> tuple[np.ndarray, list[str | None]]:
    """Letterbox many crops (``mirror``: which to flip left-right): (N, size, size) uint8 pixels (black where a
    crop failed) and each crop's error."""
    pixels = np.zeros((len(images), size, size), dtype=np.uint8)
    errors: list[str | None] = []
    for i, data in enumerate(images):
        try:
            pixels[i] = letterbox(data or b"", size, bool(mirror[i]) if mirror is not None else False)
            errors.append(None)
        except ValueError as error:
            errors.append(str(error))
    return pixels, errors


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


def _grey_jpeg(data: bytes) -> Image.Image | None:
    """A greyscale JPEG decoded by libjpeg-turbo through simplejpeg, as mode "L": the same pixels as PIL's decoder
    (tested) in about 60 % of its time (PIL parses the JPEG's markers in Python), the registry's commonest crop.
    None for anything else, which PIL then decodes or names the fault of: PNG, colour, CMYK, a broken or truncated
    file (strict decoding refuses its warnings), a multi-picture file (PIL: MPO, not admitted) and one larger than
    PIL's decompression-bomb limit."""
    if data[:2] != b"\xff\xd8" or _MULTI_PICTURE in data[:_HEADER_BYTES]:
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
        if colourspace != "Gray" or height * width > (Image.MAX_IMAGE_PIXELS or math.inf):
            return None
        return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)[..., 0])
    except ValueError:
        return None


_MULTI_PICTURE = b"MPF\x00"  # the APP2 segment of a multi-picture file, near its start
_HEADER_BYTES = 65_536


def _to_grey(image: Image.Image) -> Image.Image:
    """An 8-bit grey image ("L") from any PIL mode: 16-bit by scaling, colour by luminance."""
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.float32)
        return Image.fromarray(np.clip(values / 257.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "L":
        return image
    return image.convert("RGB").convert("L")
