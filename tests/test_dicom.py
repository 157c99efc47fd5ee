"""DICOM crops to PNG at ingest, on DICOM files written here with pydicom: each case against the DICOM standard's
formulas computed by hand (PS3.3 C.11: rescale, linear window, VOI LUT; MONOCHROME1 inverted), and the errors."""

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from erosion.core import schema
from erosion.io import storage
from erosion.registry import dicom, ingest, preprocess, validate


def write_dicom(pixels, bits, photometric, signed=False, rescale=None, window=None, lut=None,
                syntax=uid.ExplicitVRLittleEndian) -> bytes:  # fmt: skip
    """A DICOM Part 10 file of one grey frame, as an X-ray modality writes it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits <= 8 else 16), bits, bits - 1
    ds.PixelRepresentation = int(signed)
    ds.ImagerPixelSpacing = [0.1, 0.12]
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[(ds.BitsAllocated, signed)]
    ds.PixelData = encapsulate([b"\xff\x4f" + bytes(64)]) if syntax.is_compressed else pixels.astype(dtype).tobytes()
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(lut), 0, 16]
        item.add_new("LUTData", "US", [int(v) for v in lut])
        ds.VOILUTSequence = Sequence([item])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png))).astype(np.float64)


RNG = np.random.default_rng(0)
TWELVE = RNG.integers(0, 4096, (20, 30))


def test_12_bit_monochrome2_becomes_a_16_bit_png_of_the_same_values_scaled():
    png, provenance = dicom.to_png(write_dicom(TWELVE, 12, "MONOCHROME2"))
    assert Image.open(io.BytesIO(png)).mode == "I;16"
    np.testing.assert_array_equal(_pixels(png), np.rint(TWELVE / 4095 * 65535))
    assert provenance == dicom.Provenance("MONOCHROME2", [0.1, 0.12], 12, "Explicit VR Little Endian")


def test_8_bit_monochrome1_is_inverted_into_an_8_bit_png():
    stored = RNG.integers(0, 256, (16, 12))
    png, provenance = dicom.to_png(write_dicom(stored, 8, "MONOCHROME1"))
    assert Image.open(io.BytesIO(png)).mode == "L" and provenance.photometric == "MONOCHROME1"
    np.testing.assert_array_equal(_pixels(png), 255 - stored)


def test_rescale_then_the_linear_window_of_the_standard():
    png, _ = dicom.to_png(write_dicom(TWELVE, 12, "MONOCHROME2", rescale=(2, -1000), window=(3000, 2000)))
    modality = 2.0 * TWELVE - 1000  # PS3.3 C.11.1.1.2: slope * stored + intercept
    c, w = 3000, 2000  # C.11.2.1.2.1: linear, clipped to the output range
    expected = np.clip((modality - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(_pixels(png), expected * 65535, atol=0.5 + 1e-9)


def test_a_voi_lut_sequence_wins_over_the_window_and_monochrome1_inverts_it():
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 60000).astype(int) + 1000
    png, _ = dicom.to_png(write_dicom(TWELVE, 12, "MONOCHROME1", lut=lut, window=(10, 5)))
    expected = 1 - (lut[TWELVE] - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(_pixels(png), expected * 65535, atol=0.5 + 1e-9)


def test_16_bit_signed_with_an_intercept_keeps_its_whole_range():
    stored = RNG.integers(-32768, 32768, (10, 10))
    stored[0, :2] = -32768, 32767
    png, provenance = dicom.to_png(write_dicom(stored, 16, "MONOCHROME2", signed=True, rescale=(1, 1024)))
    np.testing.assert_array_equal(_pixels(png), stored + 32768)
    assert provenance.bits_stored == 16


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            write_dicom(TWELVE, 12, "MONOCHROME2", syntax=uid.JPEGLSLossless),
            "no decoder for the transfer syntax: JPEG-LS",
        ),
        (
            write_dicom(TWELVE, 12, "MONOCHROME2", syntax=uid.JPEG2000Lossless),
            "cannot decode the pixel data: JPEG 2000",
        ),
        (write_dicom(TWELVE, 12, "MONOCHROME2")[:-200], "cannot decode the pixel data"),
        (write_dicom(TWELVE, 12, "MONOCHROME2")[:400], "unreadable DICOM: no pixel data"),
        (bytes(128) + b"DICM" + b"junk", "unreadable DICOM"),
        (write_dicom(TWELVE, 12, "PALETTE COLOR"), "unsupported photometric interpretation: PALETTE COLOR"),
        (write_dicom(np.stack([TWELVE, TWELVE]), 12, "MONOCHROME2"), "not a single grey frame"),
    ],
)
def test_a_dicom_that_cannot_be_shown_raises_its_reason(data, reason):
    assert dicom.is_dicom(data)
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        dicom.to_png(data)


def test_ingest_of_a_dicom_export_keeps_the_provenance_and_reports_the_undecodable_crop(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "5.1_mcp1.dcm").write_bytes(write_dicom(TWELVE, 12, "MONOCHROME1", rescale=(1, 0), window=(2048, 4096)))
    (crops / "5.1_mcp2.dcm").write_bytes(write_dicom(RNG.integers(0, 256, (24, 24)), 8, "MONOCHROME2"))
    (crops / "5.1_mcp3.dcm").write_bytes(write_dicom(TWELVE, 12, "MONOCHROME2", syntax=uid.JPEGLSLossless))
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(buffer, "PNG")
    (crops / "5.1_mcp4.dcm").write_bytes(buffer.getvalue())  # named .dcm, a PNG inside: read by content
    (tmp_path / "labels.csv").write_text(
        "patient_id,visit_date,sop_iuid,body_part,joint,erosion_pct\n"
        + "".join(f"p5,2022-02-01,5.1,hand_left,mcp{i},{i}\n" for i in (1, 2, 3, 4))
    )
    out = tmp_path / "out"
    config = ingest.IngestConfig(
        labels=str(tmp_path / "labels.csv"), images=str(crops), out=str(out), form="long",
        image_name="{sop_iuid}_{joint}.dcm",
    )  # fmt: skip
    manifest = ingest.ingest(config)
    errors = storage.read_table(str(out / "ingest_errors")).to_pylist()
    assert [(e["line"], e["key"], e["column"]) for e in errors] == [(4, "5.1/mcp3", "image")]
    assert "no decoder for the transfer syntax: JPEG-LS Lossless" in errors[0]["reason"]
    assert manifest.rows == {"registry": 3, "ratings": 3, "errors": 1}
    rows = {r["joint"]: r for r in storage.read_table(str(out / "registry")).to_pylist()}
    assert rows["mcp1"]["photometric_interpretation"] == "MONOCHROME1" and rows["mcp1"]["bits_stored"] == 12
    assert rows["mcp1"]["pixel_spacing_mm"] == [0.1, 0.12] and rows["mcp2"]["bits_stored"] == 8
    assert rows["mcp1"]["transfer_syntax"] == "Explicit VR Little Endian"
    assert all(rows["mcp4"][f.name] is None for f in schema.PROVENANCE)
    _, measured = preprocess.letterbox_measured(rows["mcp1"]["image"], 64)
    assert measured[2] == 16  # 12 bits stored: a 16-bit PNG in the registry
    expected = 1 - np.clip((TWELVE - 2047.5) / 4095 + 0.5, 0, 1)  # the window, then MONOCHROME1 inverted
    np.testing.assert_allclose(_pixels(rows["mcp1"]["image"]), expected * 65535, atol=0.5 + 1e-9)
    report, ids = validate.validate_registry(str(out / "registry"))
    assert report.problems == [] and validate.validate_ratings(str(out / "ratings"), ids).problems == []
