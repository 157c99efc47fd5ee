"""The run manifest: one typed record for every manifest.json, written and read back the same."""

import pytest

from erosion.io import runs
from erosion.workflows import printing


def _manifest() -> runs.RunManifest:
    return runs.RunManifest(
        kind="score",
        run_id="r1",
        committed_at="2026-12-02T02:00:00+00:00",
        rows={"total": 10, "scored": 8, "failed": 2, "carried": 3, "visits": 1},
        seconds={"total": 1.5},
        model_version="abcdef0123456789",
        errors={"cannot decode image": 2},
    )


def test_a_manifest_reads_back_as_it_was_written(tmp_path):
    out = str(tmp_path)
    with runs.begin(out, "r1") as attempt:
        attempt.commit(_manifest())
    (found,) = runs.committed(out)
    assert found == runs.RunManifest(**{**_manifest().to_json(), "attempt": attempt.name, "run": attempt.run})
    assert "run" not in _manifest().to_json()


def test_a_manifest_with_an_unknown_key_is_refused():
    with pytest.raises(ValueError, match="unknown manifest keys"):
        runs.RunManifest.from_json({"kind": "score", "rowz": 3})


def test_the_runs_table_counts_rows_scored_by_the_model_apart_from_carried_ones():
    lines = printing.runs([_manifest()], "out").splitlines()
    assert lines[1].split()[-4:] == ["10", "5", "3", "2"]  # rows, scored by the model, carried over, failed
    assert lines[-1] == "1 committed runs in out"
