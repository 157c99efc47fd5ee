"""The model checkpoint: what training writes and scoring loads, in a plain process without Ray.

A checkpoint is a folder (local or ``s3://``) of three files:

- ``weights.pt``: the model's ``state_dict`` (``torch.load(..., weights_only=True)`` reads it);
- ``optimizer.pt``: the optimizer's state, so that training can resume (scoring ignores it);
- ``card.json``: the model version, the architecture's config, the class order, the pre-processing
  settings, the training config, the epoch, the metrics history of every epoch up to it, and the pretrained
  weights training started from (their file and SHA-256; none: random weights), the calibration fitted
  after training, the body parts and joints it may score, and the trained model it was fine-tuned from;
- ``patients.parquet``: the patients the model saw in training (their joints' scores are in-sample).

A cross-fitted run's ``model/`` is a fold set: a card without weights that lists the fold models
(``members``), and a patients table that gives every patient's fold.

The model version is a content hash (SHA-256 over the architecture's config and every tensor's name, type,
shape and bytes), so two checkpoints with the same weights have the same version on any machine. The CNN's
config is hashed without its ``arch`` field (and the stages head without its ``head``), so that the versions of
checkpoints from before VGG16 and the CDF head stay as they were.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from erosion.core.domain import HAND_JOINTS, MIRROR_RIGHT, NUM_STAGES
from erosion.io import storage
from erosion.model.network import ModelConfig, build_model

CARD = "card.json"
WEIGHTS = "weights.pt"
OPTIMIZER = "optimizer.pt"
PATIENTS = "patients.parquet"
FINGER_JOINTS = tuple(j for j in HAND_JOINTS if j != "wrist")
"""What a model from before the card named its joints was trained on: the finger joints of both hands."""


@dataclass
class ModelCard:
    """Everything about a trained model that is not a weight."""

    model_version: str
    model: ModelConfig
    epoch: int  # the epoch whose weights these are (0-based)
    history: list[dict]  # per-epoch metrics, every epoch up to the last one trained
    train: dict = field(default_factory=dict)  # the training config, as JSON
    classes: list[int] = field(default_factory=lambda: list(range(NUM_STAGES)))  # output k = Ratingen stage k
    preprocess: dict = field(default_factory=dict)
    pretrained: dict | None = None  # {"file", "sha256"} of the weights training started from; None: random
    calibration: dict | None = None  # temperature and prior shift (``calibration``), fitted after training
    members: list[str] = field(default_factory=list)  # a fold set's card: its fold models, relative to the run
    body_parts: list[str] = field(default_factory=lambda: ["hand_left", "hand_right"])  # what it may score
    joints: list[str] = field(default_factory=lambda: list(FINGER_JOINTS))  # of those body parts, what it may score
    init: dict | None = None  # {"model", "model_version"} of the trained model this one was fine-tuned from

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, content: dict) -> ModelCard:
        return cls(**{**content, "model": ModelConfig(**content["model"])})


def preprocess_settings(config: ModelConfig, mirror: bool = False) -> dict:
    """How a crop must be prepared for this model (see :mod:`erosion.registry.preprocess`); ``mirror``: right hands
    and feet flipped left-right to the left orientation."""
    settings = {"input_size": config.input_size, "colour": "grey", "fit": "letterbox, black padding", "scale": "1/255"}
    return settings | ({"mirror": MIRROR_RIGHT} if mirror else {})


def prepared(card: ModelCard) -> dict:
    """How a crop is prepared for the model behind ``card``: its pre-processing settings, with the input size of
    its architecture where a hand-made card has none."""
    return {"input_size": card.model.input_size} | card.preprocess


def covers(card: ModelCard, body_part: str, joint: str) -> bool:
    """Whether the model may score this joint: its card names the body part and the joint."""
    return body_part in card.body_parts and joint in card.joints


def model_version(state: dict[str, torch.Tensor], config: ModelConfig) -> str:
    """A content hash of the weights and the architecture: 16 hex digits of SHA-256."""
    described = asdict(config)
    for name, first in (("arch", "cnn"), ("head", "stages")):
        if described[name] == first:
            del described[name]  # as before there was a choice
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def write(
    directory: str,
    model: torch.nn.Module,
    card: ModelCard,
    optimizer: torch.optim.Optimizer | None = None,
    options: storage.StorageOptions | None = None,
) -> ModelCard:
    """Write a checkpoint folder; the card's model version is set from the weights. Returns the card."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    card.model_version = model_version(state, card.model)
    fs, path = storage.filesystem(directory, options)
    fs.makedirs(path, exist_ok=True)
    parts = {WEIGHTS: state} | ({OPTIMIZER: optimizer.state_dict()} if optimizer is not None else {})
    for name, content in parts.items():
        buffer = io.BytesIO()
        torch.save(content, buffer)
        fs.pipe_file(f"{path}/{name}", buffer.getvalue())
    _write_card(fs, path, card)
    return card


def _write_card(fs, path: str, card: ModelCard) -> None:
    fs.pipe_file(f"{path}/{CARD}", json.dumps(card.to_json(), indent=2).encode())


def read_card(directory: str, options: storage.StorageOptions | None = None) -> ModelCard:
    """The card of a checkpoint folder, or of a training run's folder (its ``model/``)."""
    return ModelCard.from_json(json.loads(_read(directory, CARD, options)))


def load(
    directory: str, device: str | torch.device = "cpu", options: storage.StorageOptions | None = None
) -> tuple[torch.nn.Module, ModelCard]:
    """The model in eval mode on ``device`` and its card, from a checkpoint folder or a training run's folder."""
    card = read_card(directory, options)
    model = build_model(card.model)
    state = torch.load(io.BytesIO(_read(directory, WEIGHTS, options)), map_location="cpu", weights_only=True)
    if model_version(state, card.model) != card.model_version:
        raise ValueError(f"{directory}: the weights do not match the card's model version {card.model_version}.")
    model.load_state_dict(state)
    return model.to(device).eval(), card


def load_members(
    directory: str, device: str | torch.device = "cpu", options: storage.StorageOptions | None = None
) -> list[tuple[torch.nn.Module, ModelCard]]:
    """Every model behind a checkpoint folder: itself, or a fold set's fold models in fold order."""
    card = read_card(directory, options)
    if not card.members:
        return [load(directory, device, options)]
    run = _folder(directory, options).rsplit("/", 1)[0]
    root = directory.split("://", 1)[0] + "://" if "://" in directory else ""
    return [load(f"{root}{run}/{member}", device, options) for member in card.members]


def write_set(run: str, members: list[str], options: storage.StorageOptions | None = None) -> ModelCard:
    """Publish the fold models ``members`` (their folders, relative to ``run``) as one model, ``<run>/model``: a
    card without weights whose version is a hash of theirs; scoring loads it with ``load_members``."""
    root = run.rstrip("/")
    cards = [read_card(f"{root}/{member}", options) for member in members]
    version = hashlib.sha256("/".join(c.model_version for c in cards).encode()).hexdigest()[:16]
    first = cards[0]
    card = ModelCard(
        model_version=version,
        model=first.model,
        epoch=-1,
        history=[],
        train=first.train | {"folds": len(members)},
        preprocess=first.preprocess,
        members=members,
        body_parts=first.body_parts,
        joints=first.joints,
        init=first.init,
    )
    fs, path = storage.filesystem(f"{root}/model", options)
    fs.makedirs(path, exist_ok=True)
    _write_card(fs, path, card)
    return card


def write_patients(directory: str, patients: pa.Table, options: storage.StorageOptions | None = None) -> None:
    """The patients a model saw in training (``patient_id``; a fold set: every patient with its ``fold``)."""
    storage.write_table(f"{directory.rstrip('/')}/{PATIENTS}", patients, options)


def read_patients(directory: str, options: storage.StorageOptions | None = None) -> pa.Table | None:
    """The model's patients table (``write_patients``); None for a model published without one."""
    fs, _ = storage.filesystem(directory, options)
    path = f"{_folder(directory, options)}/{PATIENTS}"
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


def load_optimizer_state(directory: str, options: storage.StorageOptions | None = None) -> dict:
    """The optimizer's state saved with a checkpoint (for resuming training)."""
    return torch.load(io.BytesIO(_read(directory, OPTIMIZER, options)), map_location="cpu", weights_only=True)


def _folder(directory: str, options: storage.StorageOptions | None) -> str:
    """The checkpoint folder's path: ``directory``, or a training run's ``model/``."""
    fs, path = storage.filesystem(directory, options)
    path = path.rstrip("/")
    if not fs.exists(f"{path}/{CARD}") and fs.exists(f"{path}/model/{CARD}"):
        path = f"{path}/model"  # a training run's folder: its chosen model
    return path


def _read(directory: str, name: str, options: storage.StorageOptions | None) -> bytes:
    fs, _ = storage.filesystem(directory, options)
    path = _folder(directory, options)
    if name == WEIGHTS and read_card(directory, options).members:
        raise ValueError(f"{directory} is a fold set: load its fold models with checkpoint.load_members.")
    if not fs.exists(f"{path}/{name}"):
        raise FileNotFoundError(f"no {name} in {directory}: not a checkpoint of erosion train")
    return fs.cat_file(f"{path}/{name}")
