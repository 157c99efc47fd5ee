"""DICOM crops to the registry's PNG, at ingest: the grey values a radiologist's viewer would show.

The chain of DICOM PS3.3 C.11 (pydicom's implementation): the stored values, then the modality LUT (Rescale Slope
and Intercept, or a Modality LUT Sequence), then the VOI LUT (a VOI LUT Sequence, else Window Center and Width;
neither: unchanged). The range that every possible stored value reaches through that chain is mapped onto the
PNG's (0 black), and MONOCHROME1 (0 is white) is inverted so that bone is bright as in MONOCHROME2. A crop of
more than 8 bits stored (12, 16) becomes a 16-bit PNG, an 8-bit one an 8-bit PNG. The pixel spacing and the
photometric interpretation are kept beside the crop as provenance (``schema.PROVENANCE``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

GREY = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True)
class Provenance:
    """What the registry keeps of a DICOM crop besides its pixels."""

    photometric: str  # MONOCHROME1 or MONOCHROME2, as stored
    pixel_spacing: list[float] | None  # mm between rows, columns: Pixel Spacing, else Imager Pixel Spacing
    bits_stored: int
    transfer_syntax: str  # its name, e.g. "Explicit VR Little Endian"


def is_dicom(data: bytes) -> bool:
    """A DICOM file (Part 10: a 128-byte preamble, then ``DICM``)."""
    return data[128:132] == b"DICM"


def to_png(data: bytes) -> tuple[bytes, Provenance]:
    """The crop as a PNG of its displayed grey values, and its provenance; ValueError("<reason>: <detail>")."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as error:
        raise ValueError(f"unreadable DICOM: {error}") from None
    if "PixelData" not in ds:
        raise ValueError(f"unreadable DICOM: no pixel data ({len(data)} bytes; truncated?)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GREY:
        raise ValueError(f"unsupported photometric interpretation: {photometric or 'none'} (expected {GREY})")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        stored = ds.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, TypeError) as error:
        name = f"{syntax.name} ({syntax})" if syntax else "none"
        detail = " ".join(str(error).split())
        if "missing dependencies" in detail:  # pydicom has no plugin installed for it
            raise ValueError(f"no decoder for the transfer syntax: {name} ({detail})") from None
        raise ValueError(f"cannot decode the pixel data: {name}: {detail}") from None
    if stored.ndim != 2:
        raise ValueError(f"not a single grey frame: pixel array of shape {stored.shape}")
    bits = int(ds.BitsStored)
    grey = displayed(stored, ds)
    if photometric == "MONOCHROME1":
        grey = 1.0 - grey
    deep = bits > 8
    pixels = np.rint(grey * (65535 if deep else 255)).astype(np.uint16 if deep else np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return buffer.getvalue(), Provenance(
        photometric,
        [float(s) for s in spacing] if spacing else None,
        bits,
        syntax.name if syntax else "",
    )


def displayed(stored: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """The stored values through the modality and VOI LUTs, as shares in [0, 1] of the range that all possible
    stored values reach through them (MONOCHROME2's sense: 0 is black)."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)):
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    every = apply_voi_lut(apply_modality_lut(np.arange(low, high + 1).astype(stored.dtype), ds), ds)
    bottom, top = float(np.min(every)), float(np.max(every))
    values = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float64)
    if top <= bottom:
        return np.zeros(values.shape)
    return np.clip((values - bottom) / (top - bottom), 0.0, 1.0)
