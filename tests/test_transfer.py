"""Transfer learning (the paper's second model): VGG16 from a local weights file, frozen features, then all layers.

VGG16 has 134 million parameters (the classifier alone 120 million), so the Ray test trains one worker on 32x32
crops of one re-scorer's joints (about 210 training and 160 validation crops), a few epochs in all. The weights
file is a freshly built torchvision ``vgg16`` saved with a fixed seed: nothing is downloaded.
"""

import dataclasses
import glob
import hashlib
import json
import logging
import os

import numpy as np
import pytest
import torch
import torchvision
from conftest import SMALL_MODEL

from erosion.model import checkpoint
from erosion.model.augment import NO_AUGMENTATION
from erosion.model.network import ErosionVGG16, ModelConfig, build_model, load_pretrained, probabilities
from erosion.train import labelled, training

VGG = ModelConfig(input_size=32, arch="vgg16")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A torchvision vgg16 state_dict (1000 classes, seeded random weights) in a local .pth file."""
    torch.manual_seed(7)
    path = str(tmp_path_factory.mktemp("weights") / "vgg16.pth")
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    return path


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> bool:
    """Whether the tensors whose names start with ``prefix`` are bit-identical in ``a`` and ``b``."""
    names = [name for name in a if name.startswith(prefix)]
    assert names, prefix
    return all(torch.equal(a[name], b[name]) for name in names)


@pytest.mark.slow
def test_vgg16_takes_grey_crops_as_imagenet_normalised_rgb():
    torch.manual_seed(0)
    model = build_model(VGG).eval()
    assert isinstance(model, ErosionVGG16)
    grey = torch.rand(2, 1, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = (grey.repeat(1, 3, 1, 1) - mean) / std
    with torch.no_grad():
        logits = model(grey)
        expected = model.classifier(torch.flatten(model.avgpool(model.features(rgb)), 1))
    assert logits.shape == (2, 6)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    pixels = (grey[:, 0] * 255).round().to(torch.uint8).numpy()
    probs = probabilities(model, pixels)
    assert probs.shape == (2, 6) and np.allclose(probs.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="width"):
        ModelConfig(arch="vgg16", width=0.5)
    with pytest.raises(ValueError, match="input_size >= 32"):
        ModelConfig(arch="vgg16", input_size=16)


@pytest.mark.slow
def test_pretrained_weights_are_read_from_a_local_file_into_all_but_the_last_layer(weights_file):
    torch.manual_seed(0)
    model = ErosionVGG16(VGG)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    sha = load_pretrained(model, weights_file)
    with open(weights_file, "rb") as file:
        assert sha == hashlib.sha256(file.read()).hexdigest()
    imagenet, loaded = torch.load(weights_file, weights_only=True), model.state_dict()
    assert _same(loaded, imagenet, "features.") and not _same(before, imagenet, "features.")
    assert _same(loaded, imagenet, "classifier.0.") and _same(loaded, imagenet, "classifier.3.")
    assert loaded["classifier.6.weight"].shape == (6, 4096) and _same(loaded, before, "classifier.6.")
    with pytest.raises(FileNotFoundError, match="local file"):
        load_pretrained(model, "https://download.pytorch.org/models/vgg16-397923af.pth")


def test_without_a_weights_file_vgg16_says_it_starts_from_random_weights(caplog):
    config = training.TrainConfig(data=labelled.LabelSet("registry", "ratings"), out="unused", model=VGG, epochs=35)
    with caplog.at_level(logging.WARNING, logger="erosion.train.training"):
        assert training.pretrained_weights(config) is None
    assert "random weights" in caplog.text
    caplog.clear()
    assert training.pretrained_weights(dataclasses.replace(config, model=ModelConfig())) is None
    assert "random weights" not in caplog.text  # the CNN always starts from random weights, as in the paper


@pytest.mark.slow
def test_a_vgg16_checkpoint_loads_and_cnn_versions_are_as_before_arch(tmp_path):
    torch.manual_seed(0)
    model = build_model(VGG).eval()
    card = checkpoint.ModelCard("", VGG, epoch=0, history=[], pretrained={"file": "x.pth", "sha256": "0" * 64})
    card = checkpoint.write(str(tmp_path / "vgg"), model, card)
    loaded, loaded_card = checkpoint.load(str(tmp_path / "vgg"))
    assert isinstance(loaded, ErosionVGG16) and loaded_card == card
    assert _same(loaded.state_dict(), model.state_dict(), "")
    # A CNN card written before ``arch`` existed has no such field: it still loads, with the same version.
    cnn = SMALL_MODEL
    checkpoint.write(str(tmp_path / "cnn"), build_model(cnn), checkpoint.ModelCard("", cnn, epoch=0, history=[]))
    content = json.loads((tmp_path / "cnn" / checkpoint.CARD).read_text())
    del content["model"]["arch"], content["pretrained"]
    (tmp_path / "cnn" / checkpoint.CARD).write_text(json.dumps(content))
    _, old_card = checkpoint.load(str(tmp_path / "cnn"))
    assert old_card.model_version == content["model_version"] and old_card.model.arch == "cnn"
    vgg_version = checkpoint.model_version(model.state_dict(), VGG)
    assert vgg_version != checkpoint.model_version(model.state_dict(), ModelConfig(input_size=64, arch="vgg16"))


def _checkpoint_of_epoch(run: str, epoch: int) -> str:
    """The folder of the checkpoint Ray Train kept for ``epoch`` under a run's folder."""
    for card in glob.glob(f"{run}/**/{checkpoint.CARD}", recursive=True):
        if json.loads(open(card).read())["epoch"] == epoch and "/model/" not in card:
            return os.path.dirname(card)
    raise AssertionError(f"no checkpoint of epoch {epoch} under {run}")


@pytest.mark.slow
def test_vgg16_trains_frozen_features_then_all_layers_when_resumed(ray_local, small_registry, weights_file, tmp_path):
    labels = labelled.LabelSet(f"{small_registry}/registry", f"{small_registry}/ratings", rater="rescorer_1")
    config = training.TrainConfig(
        data=labels,
        out=str(tmp_path),
        name="vgg",
        epochs=1,
        workers=1,
        cpus_per_worker=1.0,
        batch_size=64,
        model=VGG,
        augment=NO_AUGMENTATION,
        pretrained=weights_file,
        frozen_epochs=1,
    )
    imagenet = torch.load(weights_file, weights_only=True)

    # Phase 1 (one epoch): the classifier trains, the features are the file's, bit for bit.
    first = training.train(config)
    model, card = checkpoint.load(first.model)
    assert card.model.arch == "vgg16" and card.pretrained["sha256"] == load_pretrained(build_model(VGG), weights_file)
    assert _same(model.state_dict(), imagenet, "features.")
    assert not _same(model.state_dict(), imagenet, "classifier.0.")
    classifier_parameters = sum(p.numel() for p in model.classifier.parameters())
    assert card.history[0]["frozen_features"] and card.history[0]["learning_rate"] == config.frozen_lr
    assert card.history[0]["trained_parameters"] == classifier_parameters

    # The same run resumed for a second epoch: the phase follows from the epoch's number, so epoch 1 switches to
    # all layers with the fine-tuning rate (a worker restarted from a checkpoint picks its phase the same way).
    second = training.train(dataclasses.replace(config, epochs=2))
    history = second.card.history
    assert [h["attempt_start_epoch"] for h in history] == [0, 1]
    assert [h["frozen_features"] for h in history] == [True, False]
    assert [h["learning_rate"] for h in history] == [config.frozen_lr, config.finetune_lr]
    all_parameters = sum(p.numel() for p in model.parameters())
    assert [h["trained_parameters"] for h in history] == [classifier_parameters, all_parameters]
    last, last_card = checkpoint.load(_checkpoint_of_epoch(second.run, 1))
    assert last_card.pretrained == card.pretrained
    assert not _same(last.state_dict(), imagenet, "features.")
