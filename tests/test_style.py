"""The habits that tools hold: lint, format, and the layering contract (pure modules import no Ray)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint():
    _run(sys.executable, "-m", "ruff", "check", ".")


def test_ruff_format():
    _run(sys.executable, "-m", "ruff", "format", "--check", ".")


def test_import_contracts_hold():
    _run("lint-imports")
