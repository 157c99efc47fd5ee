import io

import numpy as np
import pytest
from PIL import Image

from erosion.registry.preprocess import _open, letterbox, letterbox_batch


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_a_wide_crop_is_padded_black_above_and_below_never_stretched():
    out = letterbox(_encode(np.full((50, 100), 200, np.uint8), "PNG"))
    assert out.shape == (150, 150) and out.dtype == np.uint8
    rows = np.flatnonzero(out[:, 75])
    assert (rows.min(), rows.max()) == (37, 111)  # 75 rows of image, centred: (150 - 75) // 2 = 37 on top
    assert (out[:37] == 0).all() and (out[112:] == 0).all() and (out[40:110, :] == 200).all()


def test_16_bit_png_maps_to_8_bit():
    out = letterbox(_encode(np.full((30, 30), 65535, np.uint16), "PNG"), size=30)
    assert (out == 255).all()
    half = letterbox(_encode(np.full((30, 30), 257 * 100, np.uint16), "PNG"), size=30)
    assert (half == 100).all()


def test_rgb_jpeg_becomes_grey():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 1] = 255
    out = letterbox(_encode(rgb, "JPEG"), size=40)
    assert abs(int(out[20, 20]) - round(0.587 * 255)) <= 3  # ITU-R 601 luma of pure green


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty image"),
        (b"\x00\x01garbage" * 10, "cannot decode image: not a JPEG or PNG"),
        (None, "empty image"),
        (_encode(np.zeros((8, 8), np.uint8), "GIF"), "unsupported format: GIF"),
    ],
)
def test_undecodable_crops_raise_with_a_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        letterbox(data or b"")


def test_a_batch_keeps_every_row_and_names_the_failures():
    good = _encode(np.full((3, 3), 90, np.uint8), "PNG")
    truncated = _encode(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8), "JPEG")[:500]
    pixels, errors = letterbox_batch([good, truncated, b"", good])
    assert pixels.shape == (4, 150, 150)
    assert errors[0] is None and errors[3] is None
    assert "cannot decode image" in errors[1] and "empty image" in errors[2]
    assert (pixels[1] == 0).all() and (pixels[0] == 90).all()


def test_grey_jpegs_decode_to_the_same_pixels_as_pils_decoder():
    # the fast path (simplejpeg) against PIL's own decoder, on grey JPEGs of several sizes, qualities and encodings
    rng = np.random.default_rng(7)
    for shape, options in [((167, 187), {}), ((33, 9), {"quality": 30}), ((150, 150), {"progressive": True})]:
        smooth = np.cumsum(rng.integers(0, 9, shape), axis=1) % 256
        data = _encode(smooth.astype(np.uint8), "JPEG", **options)
        fast = _open(data)
        assert fast.mode == "L" and fast.format is None  # decoded by simplejpeg, not by PIL
        np.testing.assert_array_equal(np.asarray(fast), np.asarray(Image.open(io.BytesIO(data))))


def test_what_the_fast_path_leaves_to_pil_keeps_pils_decoding_and_errors(monkeypatch):
    colour = _open(_encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    assert colour.format == "JPEG" and colour.mode == "RGB"  # colour JPEGs: PIL, whose luma conversion stays
    grey = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    with pytest.raises(ValueError, match="cannot decode image"):
        _open(_encode(grey, "JPEG")[:300])  # truncated
    with pytest.raises(ValueError, match="unsupported format: MPO"):
        _open(_encode(grey, "MPO", save_all=True, append_images=[Image.fromarray(grey)]))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 3)  # PIL refuses over twice its limit
    with pytest.raises(ValueError, match="cannot decode image: .*decompression bomb"):
        _open(_encode(grey, "JPEG"))
