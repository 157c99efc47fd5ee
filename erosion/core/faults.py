"""Faults that tests inject into a run (a worker that dies), kept apart from the settings a run records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Faults:
    """Which faults to inject; the default injects none. No manifest or model card records them."""

    crash_decode_once: str | None = None  # a marker file; the first scoring decode task to miss it dies once
    crash_model_once: str | None = None  # a marker file; the first model actor call to miss it kills its actor
    fail_at_epoch: int | None = None  # training's last worker dies once, in the first batch of this epoch
