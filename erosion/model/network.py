"""The paper's CNN (Rohrbach et al. 2019): six conv blocks, two dense blocks, six Ratingen stages.

Each conv block is two 3x3 convolutions (32, 32, 64, 64, 128, 128 filters by block), each followed by batch
norm and ReLU, then 2x2 max pooling. At 150x150 input this leaves 2x2x128 features; two dense blocks
(512 and 256 units: dense, batch norm, ReLU, dropout) and a six-way output with batch norm follow. With
the default config it has exactly 1,072,818 trainable parameters, as published. ``width`` and
``input_size`` shrink it for CPU runs (tests, demo), keeping the architecture.

The paper's second model (``arch="vgg16"``) is torchvision's VGG16 with its last layer replaced by six outputs,
for transfer learning from ImageNet weights read from a local file (:func:`load_pretrained`; nothing is
downloaded). Both models take the same input, grey crops scaled to [0, 1]; VGG16 repeats the grey channel three
times and normalises with ImageNet's mean and standard deviation inside its forward pass. Its adaptive average
pooling brings any input of at least 32x32 (five 2x2 poolings) to the 7x7x512 that its classifier expects.

Either model ends in one of two heads: ``"stages"`` (the paper's), six logits whose softmax is P(stage k); or
``"cdf"`` (the thesis's regression), 101 logits whose softmax is P(% eroded = j), trained with CRPS
(:mod:`erosion.model.cdf`). The CNN's CDF head is a plain dense layer: the paper's batch norm on the six outputs, put
on 101, holds their logits near unit spread and slowed learning a lot (the eight crops of ``tests/test_cdf.py``:
a mean absolute error of 15.9 % after 150 steps with it, 2.2 % without). :func:`predict` turns either head's
outputs into the same prediction per crop: the six stage probabilities and, for the CDF head, the predicted %.

Each model's ``forward`` is ``output(embed(x))``: ``embed`` gives the penultimate layer's activations (the CNN's
second dense block, VGG16's second dense layer; what the thesis mapped with t-SNE), ``output`` the last layer of
them; :func:`predict_embedded` returns the embeddings beside the predictions in one pass (``erosion score
--embeddings``).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from erosion.core.domain import NUM_STAGES
from erosion.core.schema import PREDICTION_PROBS, PREDICTION_WIDTH
from erosion.core.settings import setting
from erosion.model import cdf
from erosion.model.augment import transform

BLOCK_FILTERS = (32, 32, 64, 64, 128, 128)
ARCHITECTURES = ("cnn", "vgg16")
HEADS = {"stages": NUM_STAGES, "cdf": cdf.BINS}  # head -> outputs
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of RGB in [0, 1]: what torchvision's ImageNet weights were trained on
IMAGENET_STD = (0.229, 0.224, 0.225)
CPU_CHUNK_PIXELS = 131_072  # per model call on a CPU: 32 crops of 64 x 64, 5 of 150 x 150 (see predict)


@dataclass(frozen=True)
class ModelConfig:
    """The architecture's knobs; the defaults are the paper's."""

    input_size: int = setting("crops are letterboxed to input_size x input_size", 150)
    width: float = setting("multiplies every filter and unit count (0.5: half width); the CNN only", 1.0)
    dropout: float = setting("in the two dense blocks (VGG16: in its classifier's two)", 0.5)
    arch: str = setting("cnn: the paper's CNN; vgg16: torchvision's VGG16", "cnn", choices=ARCHITECTURES)
    head: str = setting(
        "stages: six stage logits (the paper's); cdf: 101 bins of % eroded (the thesis's)",
        "stages",
        choices=tuple(HEADS),
    )

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}.")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {tuple(HEADS)}, got {self.head!r}.")
        if self.arch == "vgg16" and self.width != 1.0:
            raise ValueError(f"width applies to the CNN only; VGG16 needs width 1.0, got {self.width}.")
        if self.arch == "vgg16" and self.input_size < 32:
            raise ValueError(f"VGG16 needs input_size >= 32 for its five 2x2 poolings, got {self.input_size}.")


def embedding_width(config: ModelConfig) -> int:
    """The width of the model's penultimate layer (:meth:`ErosionCNN.embed`): the CNN's second dense block, VGG16's
    second dense layer."""
    return 4096 if config.arch == "vgg16" else round(256 * config.width)


def build_model(config: ModelConfig) -> nn.Module:
    """The model ``config.arch`` names, with random weights (seeded by ``torch.manual_seed``)."""
    return ErosionVGG16(config) if config.arch == "vgg16" else ErosionCNN(config)


class ErosionCNN(nn.Module):
    """Maps a batch of (N, 1, S, S) crops scaled to [0, 1] to (N, 6) stage logits (CDF head: (N, 101) logits)."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        if config.arch != "cnn":
            raise ValueError(f"ErosionCNN builds arch 'cnn', got {config.arch!r}: use build_model.")
        layers: list[nn.Module] = []
        channels, size = 1, config.input_size
        for filters in BLOCK_FILTERS:
            out = max(1, round(filters * config.width))
            for conv_in in (channels, out):
                layers += [nn.Conv2d(conv_in, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            channels, size = out, size // 2
        if size < 1:
            raise ValueError(f"input_size must be >= 64 for six 2x2 poolings, got {config.input_size}.")
        self.features = nn.Sequential(*layers)
        units = [channels * size * size, round(512 * config.width), round(256 * config.width)]
        dense: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(units, units[1:], strict=False):
            dense += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
        if config.head == "stages":
            dense += [nn.Linear(units[-1], NUM_STAGES), nn.BatchNorm1d(NUM_STAGES)]
        else:  # no batch norm on the 101 bins: it holds their logits near unit spread, which slows learning a lot
            dense.append(nn.Linear(units[-1], cdf.BINS))
        self.head = nn.Sequential(*dense)
        self.output_layers = 2 if config.head == "stages" else 1  # the last linear layer (and its batch norm)
        self.embedding_width = embedding_width(config)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, embedding_width) the penultimate layer's activations: the second dense block's output."""
        return self.head[: -self.output_layers](self.features(x))

    def output(self, embedding: torch.Tensor) -> torch.Tensor:
        """The logits of :meth:`embed`'s activations: the last linear layer (stages head: and its batch norm)."""
        return self.head[-self.output_layers :](embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.embed(x))


class ErosionVGG16(nn.Module):
    """torchvision's VGG16 (configuration D, no batch norm) with six outputs (or 101), on grey crops in [0, 1].

    ``features``, ``avgpool`` and ``classifier`` are torchvision's modules under torchvision's names, so that a
    torchvision ``vgg16`` state_dict fits every layer but the replaced last one (``classifier.6``).
    """

    def __init__(self, config: ModelConfig = ModelConfig(arch="vgg16")) -> None:
        super().__init__()
        if config.arch != "vgg16":
            raise ValueError(f"ErosionVGG16 builds arch 'vgg16', got {config.arch!r}: use build_model.")
        from torchvision.models import vgg16  # here: importing torchvision costs every model process 1.3 s

        vgg = vgg16(weights=None, dropout=config.dropout)
        vgg.classifier[-1] = nn.Linear(vgg.classifier[-1].in_features, HEADS[config.head])
        self.features, self.avgpool, self.classifier = vgg.features, vgg.avgpool, vgg.classifier
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.embedding_width = embedding_width(config)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4096) the penultimate layer's activations: the classifier's second dense layer after its ReLU."""
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std  # grey -> RGB, as ImageNet's weights expect
        return self.classifier[:-1](torch.flatten(self.avgpool(self.features(x)), 1))

    def output(self, embedding: torch.Tensor) -> torch.Tensor:
        """The logits of :meth:`embed`'s activations: the replaced last layer."""
        return self.classifier[-1](embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.embed(x))


def file_sha256(path: str) -> str:
    """The SHA-256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def load_pretrained(model: ErosionVGG16, path: str) -> str:
    """Copy a torchvision ``vgg16`` state_dict in a local file into every layer but the last; returns its SHA-256.

    Nothing is downloaded: ``path`` is a local file, e.g. torchvision's ``vgg16-397923af.pth`` (ImageNet) fetched
    beforehand. The last layer (1000 ImageNet classes) keeps its random weights; its six outputs are trained.
    """
    if "://" in path or not Path(path).is_file():
        raise FileNotFoundError(f"pretrained weights must be a local file (nothing is downloaded), got {path!r}.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    wanted = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("classifier.6.")}
    missing = sorted(name for name in wanted if name not in state)
    mismatched = sorted(name for name in wanted if name in state and state[name].shape != wanted[name].shape)
    if missing or mismatched:
        raise ValueError(
            f"{path} is not a torchvision vgg16 state_dict: missing {missing[:3]}, wrong shape {mismatched[:3]}."
        )
    model.load_state_dict({name: state[name] for name in wanted}, strict=False)
    return file_sha256(path)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, as Keras counts them (batch norm's running statistics are not trainable)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def for_inference(model: nn.Module) -> nn.Module:
    """A copy of the model for scoring only (the model itself is left as it is: checkpoints hold its state dict): in
    eval mode, each batch norm folded into the convolution or linear layer before it (an ``nn.Identity`` left in its
    place, so that layer positions hold), in channels-last memory, the layout whose convolutions are fastest on CPU
    (about 3x on the reduced CNN, measured) as on a GPU's tensor cores. Its outputs are the same, to float rounding
    (tested)."""
    model = copy.deepcopy(model).eval()
    for layers in [module for module in model.modules() if isinstance(module, nn.Sequential)]:
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                layers[i], layers[i + 1] = fuse_conv_bn_eval(layers[i], layers[i + 1]), nn.Identity()
            elif isinstance(layers[i], nn.Linear) and isinstance(layers[i + 1], nn.BatchNorm1d):
                layers[i], layers[i + 1] = fuse_linear_bn_eval(layers[i], layers[i + 1]), nn.Identity()
    return model.to(memory_format=torch.channels_last)


def predict(model: nn.Module, pixels: np.ndarray, views: torch.Tensor | None = None) -> np.ndarray:
    """(N, 7) float32 predictions of (N, S, S) uint8 crops: P(stage k) for k = 0..5, then the predicted % eroded
    surface (NaN for the stages head). Crops are scaled to [0, 1] on the model's device.

    With ``views`` ((V, 2, 3) transforms, ``augment.views``), the prediction of the mean distribution over the V
    transformed copies of each crop (test-time augmentation). The model must have ``embed`` and ``output`` (its
    forward is ``output(embed(x))``), be in eval mode, best channels-last
    (:func:`for_inference`). On a GPU the batch runs under bf16 autocast (as in training); on a CPU in chunks of
    about ``CPU_CHUNK_PIXELS`` input pixels, whose activations stay in cache (2-3x faster than 256 crops at once).
    """
    return _predict(model, pixels, views, embed=False)[0]


def predict_embedded(
    model: nn.Module, pixels: np.ndarray, views: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict`'s (N, 7) predictions and the (N, embedding_width) float16 penultimate-layer embeddings of the
    same crops (``model.embed``; with ``views``, the mean embedding over the transformed copies), in one pass."""
    return _predict(model, pixels, views, embed=True)


def _predict(
    model: nn.Module, pixels: np.ndarray, views: torch.Tensor | None, embed: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`predict`, and the embeddings where ``embed`` asks for them (else None)."""
    if not len(pixels):
        empty = np.zeros((0, model.embedding_width), np.float16) if embed else None
        return np.zeros((0, PREDICTION_WIDTH), np.float32), empty
    device = next(model.parameters()).device
    if device.type == "cpu":
        chunk = max(1, CPU_CHUNK_PIXELS // pixels[0].size)
        if len(pixels) > chunk:
            parts = [_predict(model, pixels[i : i + chunk], views, embed) for i in range(0, len(pixels), chunk)]
            embedded = np.concatenate([e for _, e in parts]) if embed else None
            return np.concatenate([p for p, _ in parts]), embedded
    batch = torch.from_numpy(pixels).to(device, non_blocking=True).unsqueeze(1).float().div_(255)
    copies = [batch] if views is None else [transform(batch, view) for view in views]
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, device.type == "cuda"):
        total, features = 0, 0
        for copy in copies:  # forward is output(embed(x)): the embedding costs nothing extra
            embedding = model.embed(copy.contiguous(memory_format=torch.channels_last))
            total = total + torch.softmax(model.output(embedding).float(), dim=1)
            if embed:
                features = features + embedding.float()
        mass = total / len(copies)
        embedded = (features / len(copies)).half().cpu().numpy() if embed else None
        if mass.shape[1] == NUM_STAGES:
            pct = torch.full((len(mass), 1), float("nan"), device=device)
            return torch.cat([mass, pct], dim=1).cpu().numpy(), embedded
        predicted = torch.cat([cdf.stage_probabilities(mass), cdf.expected_pct(mass)[:, None]], dim=1)
        return predicted.cpu().numpy(), embedded


def probabilities(model: nn.Module, pixels: np.ndarray, views: torch.Tensor | None = None) -> np.ndarray:
    """(N, 6) float32 stage probabilities of (N, S, S) uint8 crops (:func:`predict` without the %)."""
    return predict(model, pixels, views)[:, PREDICTION_PROBS]


def stage_logits(outputs: torch.Tensor) -> torch.Tensor:
    """(N, 6) stage scores whose softmax is P(stage k): the stages head's logits as they are, or the log of the
    CDF head's stage probabilities."""
    if outputs.shape[1] == NUM_STAGES:
        return outputs
    return torch.log(cdf.stage_probabilities(torch.softmax(outputs.float(), dim=1)).clamp_min(1e-12))
