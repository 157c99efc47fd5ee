"""Which model scores which body part: the ``--model`` of a scoring run.

Three spellings: ``RUN`` (a checkpoint or training run folder: it scores every body part its card names),
``body_part=RUN`` pairs (the flag repeated, or comma-separated), or a JSON file mapping body parts to runs
(``{"hand_left": "runs/hand", "foot_left": "runs/foot", ...}``). A pair whose model's card does not name its body
part is refused before anything is read; a joint of a body part (or a joint) that no model covers comes out with
an error, never scored by another body part's model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from erosion.core import domain
from erosion.io import storage
from erosion.model import checkpoint


@dataclass(frozen=True)
class Models:
    """The models of a scoring run: each body part's model folder and every folder's card."""

    spec: str  # as given on the command line
    parts: dict[str, str]  # body part -> model folder
    cards: dict[str, checkpoint.ModelCard]  # model folder -> its card

    @property
    def version(self) -> str:
        """The run's model version: the one model's, or a digest of each body part's model version."""
        versions = {self.cards[folder].model_version for folder in self.parts.values()}
        if len(versions) == 1:
            return versions.pop()
        pairs = ",".join(f"{part}={self.card(part).model_version}" for part in sorted(self.parts))
        return hashlib.sha256(pairs.encode()).hexdigest()[:16]

    @property
    def input_size(self) -> int:
        return checkpoint.prepared(next(iter(self.cards.values())))["input_size"]

    def card(self, body_part: str) -> checkpoint.ModelCard | None:
        """The card of the model that scores ``body_part``; None: no model does."""
        folder = self.parts.get(body_part)
        return None if folder is None else self.cards[folder]

    def coverage(self) -> dict[str, dict]:
        """What scoring's decode step needs (plain values, no torch): body part -> the joints its model may score
        and whether its crops are mirrored (``domain.mirrored``)."""
        return {
            part: {
                "joints": tuple(self.cards[folder].joints),
                "mirror": domain.mirrored(checkpoint.prepared(self.cards[folder]), part),
            }
            for part, folder in self.parts.items()
        }

    def described(self) -> dict[str, dict]:
        """The run manifest's ``models``: body part -> its model folder, version and joints."""
        return {
            part: {"model": folder, "model_version": self.cards[folder].model_version, "joints": self.card(part).joints}
            for part, folder in sorted(self.parts.items())
        }


def resolve(spec: str, options: storage.StorageOptions | None = None) -> Models:
    """The models ``spec`` names, their cards read and checked: each pair's card names its body part, and every
    model takes crops of one input size. ValueError says which pair is wrong."""
    pairs = parse(spec, options)
    cards: dict[str, checkpoint.ModelCard] = {}
    for folder in dict.fromkeys(pairs.values() if isinstance(pairs, dict) else [pairs]):
        cards[folder] = checkpoint.read_card(folder, options)
    if isinstance(pairs, str):
        pairs = {part: pairs for part in cards[pairs].body_parts}
    for part, folder in pairs.items():
        if part not in cards[folder].body_parts:
            raise ValueError(
                f"the model {folder} may score {', '.join(cards[folder].body_parts)} (its card), not {part}."
            )
    sizes = {checkpoint.prepared(card)["input_size"] for card in cards.values()}
    if len(sizes) > 1:
        raise ValueError(f"the models take crops of different sizes ({sorted(sizes)} px): score them in two runs.")
    return Models(spec=spec, parts=pairs, cards=cards)


def parse(spec: str, options: storage.StorageOptions | None = None) -> dict[str, str] | str:
    """``spec`` as body part -> model folder, or the one model folder it names."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if items and all(item.split("=", 1)[0] in domain.BODY_PARTS and "=" in item for item in items):
        pairs: dict[str, str] = {}
        for part, folder in (item.split("=", 1) for item in items):
            if pairs.setdefault(part, folder) != folder:
                raise ValueError(f"two models for {part}: {pairs[part]} and {folder}.")
        return pairs
    if spec.endswith(".json"):
        content = json.loads(storage.read_bytes(spec, options))
        if not isinstance(content, dict) or not content or not set(content) <= set(domain.BODY_PARTS):
            raise ValueError(f"{spec} must map some of {', '.join(domain.BODY_PARTS)} to models; got {content}.")
        return {part: str(folder) for part, folder in content.items()}
    return spec
