"""The Arrow schemas of the data contracts (design brief): registry, ratings and synthetic ground truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from erosion.core.domain import NUM_STAGES

REGISTRY = pa.schema(
    [
        pa.field("joint_id", pa.string(), nullable=False),  # stable key, "<sop_iuid>/<joint>"
        pa.field("patient_id", pa.string(), nullable=False),  # pseudonymous; splits never cut a patient
        pa.field("visit_date", pa.date32(), nullable=False),  # consultation date
        pa.field("sop_iuid", pa.string(), nullable=False),  # the source radiograph
        pa.field("body_part", pa.string(), nullable=False),  # hand_left, hand_right, foot_left, foot_right
        pa.field("joint", pa.string(), nullable=False),  # pip1..5, mcp1..5, mtp1..5, wrist
        pa.field("image", pa.binary(), nullable=False),  # encoded crop: JPEG or PNG, 8- or 16-bit
    ]
)

PROVENANCE = [
    pa.field("photometric_interpretation", pa.string()),  # MONOCHROME1 or MONOCHROME2 as stored
    pa.field("pixel_spacing_mm", pa.list_(pa.float64(), 2)),  # between rows, columns (Pixel or Imager Pixel Spacing)
    pa.field("bits_stored", pa.int8()),
    pa.field("transfer_syntax", pa.string()),
]
"""Where a crop came from as DICOM (``erosion ingest``; null for JPEG and PNG crops): beside the registry's columns."""

INGESTED = pa.schema([*REGISTRY, *PROVENANCE])
"""What ``erosion ingest`` writes: the registry contract and the DICOM provenance."""

RATINGS = pa.schema(
    [
        pa.field("joint_id", pa.string(), nullable=False),
        pa.field("rater", pa.string(), nullable=False),
        pa.field("erosion_pct", pa.float32()),  # 0..100, null where only a stage was given
        pa.field("ratingen", pa.int8(), nullable=False),  # 0..5, derived from erosion_pct where only that is given
    ]
)

TRUTH = pa.schema(
    [
        pa.field("joint_id", pa.string(), nullable=False),
        pa.field("erosion_pct", pa.float32(), nullable=False),  # the true % eroded surface the crop was drawn with
        pa.field("ratingen", pa.int8(), nullable=False),  # its stage
    ]
)
"""Synthetic registries only: the ground truth behind each crop."""

CORRUPTED = pa.schema(
    [
        pa.field("joint_id", pa.string(), nullable=False),
        pa.field("rater", pa.string(), nullable=False),
        pa.field("ratingen_read", pa.int8(), nullable=False),  # the stage the rater read before it was replaced
        pa.field("ratingen", pa.int8(), nullable=False),  # the stage in the ratings table, at least 2 away
    ]
)
"""Synthetic registries only: the ratings replaced on purpose (``erosion synth --corrupt-share``), beside the truth."""

CROP = pa.struct(
    [
        pa.field("height", pa.int32()),  # pixels, as stored
        pa.field("width", pa.int32()),
        pa.field("bit_depth", pa.int8()),  # 8 or 16
        pa.field("intensity_mean", pa.float32()),  # grey values as a share of the bit depth's maximum
        pa.field("intensity_sd", pa.float32()),
        pa.field("saturated", pa.float32()),  # share of pixels at 0 or at the maximum
    ]
)
"""What the decode step measures of a crop as stored (``preprocess.crop_statistics``, in this order)."""


def crop_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(N, len(CROP)) float32 of a ``crop`` column (NaN where null)."""
    fields = [pc.struct_field(column, field.name) for field in CROP]
    return np.stack([pc.cast(f, pa.float32()).to_numpy(zero_copy_only=False) for f in fields], axis=1)


def crop_column(values: np.ndarray) -> pa.StructArray:
    """A ``crop`` column from (N, len(CROP)) statistics; null where a row's are NaN (not decoded)."""
    missing = np.isnan(values).all(axis=1)
    fields = [pa.array(np.nan_to_num(values[:, i]).astype(f.type.to_pandas_dtype())) for i, f in enumerate(CROP)]
    return pa.StructArray.from_arrays(fields, fields=list(CROP), mask=pa.array(missing))


KEYS = ["joint_id", "patient_id", "visit_date", "sop_iuid", "body_part", "joint"]
"""The registry's columns other than the image: what every derived table carries."""

SCORES = pa.schema(
    [field.with_nullable(True) for field in REGISTRY if field.name in KEYS]  # a row with a null key still comes out
    + [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("probs", pa.list_(pa.float32(), 6)),  # P(stage k), k = 0..5, calibrated; null for a failed row
        pa.field("ratingen_pred", pa.int8()),  # the model's own argmax stage (of its probabilities before calibration)
        pa.field("ratingen_expected", pa.float32()),  # sum of k * P(stage k)
        pa.field("erosion_pct_pred", pa.float32()),  # CDF head: the predicted % eroded (mean); null: stages head
        pa.field("ratingen_from_pct", pa.int8()),  # CDF head: the stage of erosion_pct_pred; null: stages head
        pa.field("error", pa.string()),  # "<reason>: <detail>" for a row that could not be scored, else null
        pa.field("fingerprint", pa.binary(16)),  # BLAKE2b-128 of joint_id and image: what carry-over compares
        pa.field("carried", pa.bool_(), nullable=False),  # the score was carried over from an earlier run
        pa.field("source_file", pa.string()),  # the registry file the row came from, as the run's manifest names it
        pa.field("in_sample", pa.bool_()),  # the model saw the patient in training; null: the model cannot tell
        pa.field("stage_spread", pa.float32()),  # fold models: sd of the expected stage over them (new patients)
        pa.field("crop", CROP),  # the crop as stored, measured when decoded (carried with the score); null: not decoded
    ]
)
"""Scores, one row per registry row per run: scored, or with its error."""


def embeddings(width: int) -> pa.Schema:
    """A scoring run's embeddings (``erosion score --embeddings``): one row per crop its model scored (not carried
    over, not failed), the penultimate layer's ``width`` activations. Rows of one (model_version, fold) share a
    space; neighbours and maps compare rows within one space only."""
    return pa.schema(
        [
            pa.field("joint_id", pa.string(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),  # the scores' model_version of the row
            pa.field("fold", pa.int8(), nullable=False),  # the fold model that embedded it; -1: a single model
            pa.field("embedding", pa.list_(pa.float16(), width), nullable=False),
        ]
    )


PREDICTION_WIDTH = NUM_STAGES + 1
"""A model's prediction of one crop as scoring moves it: P(stage 0..5), then the predicted % (NaN: stages head)."""

PREDICTION_PROBS = slice(0, NUM_STAGES)
"""The columns of a prediction that hold P(stage 0..5): ``prediction[:, PREDICTION_PROBS]``."""

PREDICTION_PCT = NUM_STAGES
"""The column of a prediction that holds the predicted % eroded surface: ``prediction[:, PREDICTION_PCT]``."""

SCORE_WIDTH = PREDICTION_WIDTH + 3 + len(CROP)
"""A scored crop as scoring moves it (and carries it over): a prediction with calibrated probabilities, then the
stage spread over fold models (NaN: none), the model's own stage, whether the patient is in-sample (1, 0;
NaN: unknown) and the crop's statistics as stored (``CROP``'s fields; NaN: not decoded)."""

SCORE_SPREAD, SCORE_STAGE, SCORE_IN_SAMPLE = PREDICTION_WIDTH, PREDICTION_WIDTH + 1, PREDICTION_WIDTH + 2
SCORE_CROP = slice(PREDICTION_WIDTH + 3, SCORE_WIDTH)
"""The columns of a scored crop after its prediction's."""

KEY = "joint_id"

_COMPATIBLE = {
    pa.string(): (pa.string(), pa.large_string(), pa.string_view()),
    pa.binary(): (pa.binary(), pa.large_binary(), pa.binary_view()),
    pa.float32(): (pa.float16(), pa.float32(), pa.float64()),
    pa.int8(): (
        pa.int8(),
        pa.int16(),
        pa.int32(),
        pa.int64(),
        pa.uint8(),
        pa.uint16(),
        pa.uint32(),
        pa.uint64(),
    ),
    pa.date32(): (pa.date32(),),
}


def schema_problems(actual: pa.Schema, expected: pa.Schema) -> list[tuple[str, str]]:
    """(column, reason) for each column of ``expected`` that is missing from ``actual`` or has a wrong type.

    Types that read into the contract without loss of meaning pass (large_string for string, any integer
    for int8 stages, float64 for float32 percentages); extra columns are allowed and ignored.
    """
    problems = []
    for field in expected:
        index = actual.get_field_index(field.name)
        if index < 0:
            problems.append((field.name, f"missing column {field.name!r} ({field.type})"))
        elif actual.field(index).type not in _COMPATIBLE[field.type]:
            problems.append(
                (
                    field.name,
                    f"column {field.name!r} has type {actual.field(index).type}, expected {field.type}",
                )
            )
    return problems


def normalize_text(batch: pa.RecordBatch, expected: pa.Schema) -> pa.RecordBatch:
    """The batch with its string and binary columns cast to the contract's types (large_string -> string).

    Numbers keep their types, so a value out of the contract's range is still seen as it was written.
    """
    columns = [batch[f.name].cast(f.type) if f.type in (pa.string(), pa.binary()) else batch[f.name] for f in expected]
    return pa.RecordBatch.from_arrays(columns, names=expected.names)
