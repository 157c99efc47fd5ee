"""The CDF head (the thesis's regression): CRPS against properscoring, stage probabilities against the Ratingen
rule, and a model that learns the % of a handful of crops with it."""

import dataclasses

import numpy as np
import properscoring
import pytest
import torch
from conftest import SMALL_MODEL
from torch import nn

from erosion.core import domain
from erosion.model import cdf
from erosion.model.network import CPU_CHUNK_PIXELS, ModelConfig, build_model, for_inference, predict, stage_logits
from erosion.train import step

SMALL_CDF = dataclasses.replace(SMALL_MODEL, head="cdf")


def test_crps_is_properscorings_for_the_predicted_distribution_at_a_whole_percent():
    torch.manual_seed(0)
    outputs = 3 * torch.randn(20, cdf.BINS)
    pct = torch.tensor([0, 1, 5, 20, 21, 37, 50, 63, 80, 81, 99, 100] + [7] * 8, dtype=torch.float32)
    mass = torch.softmax(outputs, dim=1).double().numpy()
    # Over whole %, the discrete CRPS summed over the 101 bins is the energy form E|X - y| - E|X - X'| / 2.
    expected = [
        properscoring.crps_ensemble(y, np.arange(cdf.BINS), weights=m) for y, m in zip(pct.numpy(), mass, strict=True)
    ]
    np.testing.assert_allclose(cdf.crps(outputs, pct).numpy() * cdf.BINS, expected, rtol=1e-4, atol=1e-4)


def test_crps_rewards_a_sharp_distribution_at_the_truth_over_a_wide_or_wrong_one():
    at = torch.full((1, cdf.BINS), -30.0)
    at[0, 40] = 30.0
    wide, wrong = torch.zeros(1, cdf.BINS), torch.roll(at, 30, dims=1)
    y = torch.tensor([40.0])
    sharp = cdf.crps(at, y).item()
    assert sharp < 1e-6 < cdf.crps(wide, y).item() < cdf.crps(wrong, y).item()


def test_stage_probabilities_are_the_mass_of_each_ratingen_range_and_the_mean_is_the_expected_percent():
    mass = torch.softmax(torch.randn(8, cdf.BINS, generator=torch.Generator().manual_seed(1)), dim=1).double()
    stage_of = domain.ratingen_stage(np.arange(cdf.BINS))
    expected = np.stack([np.bincount(stage_of, weights=m, minlength=domain.NUM_STAGES) for m in mass.numpy()])
    np.testing.assert_allclose(cdf.stage_probabilities(mass).numpy(), expected, atol=1e-12)
    means = [np.average(np.arange(cdf.BINS), weights=m) for m in mass.numpy()]
    np.testing.assert_allclose(cdf.expected_pct(mass).numpy(), means, rtol=1e-6)  # np.average renormalises


def test_a_rating_without_a_percent_stands_for_the_middle_of_its_stage():
    np.testing.assert_array_equal(domain.stage_midpoint_pct(np.arange(6)), [0, 10, 30, 50, 70, 90])
    assert (domain.ratingen_stage(domain.stage_midpoint_pct(np.arange(6))) == np.arange(6)).all()
    with pytest.raises(ValueError, match="stages must lie in 0-5"):
        domain.stage_midpoint_pct(6)


@pytest.mark.parametrize("arch", ["cnn", pytest.param("vgg16", marks=pytest.mark.slow)])  # VGG16 takes seconds to build
def test_both_architectures_take_the_cdf_head_and_predict_stages_and_a_percent(arch):
    config = SMALL_CDF if arch == "cnn" else ModelConfig(input_size=32, arch="vgg16", head="cdf")
    torch.manual_seed(0)
    model = build_model(config).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (5, config.input_size, config.input_size), dtype=np.uint8)
    with torch.no_grad():
        outputs = model(torch.from_numpy(pixels).unsqueeze(1).float() / 255)
    assert outputs.shape == (5, cdf.BINS)
    predicted = predict(model, pixels)
    mass = torch.softmax(outputs, dim=1)
    np.testing.assert_allclose(predicted[:, :6], cdf.stage_probabilities(mass).numpy(), atol=1e-5)
    np.testing.assert_allclose(predicted[:, 6], cdf.expected_pct(mass).numpy(), atol=1e-3)
    np.testing.assert_allclose(torch.softmax(stage_logits(outputs), dim=1).numpy(), predicted[:, :6], atol=1e-5)


def test_the_stages_head_predicts_no_percent():
    model = build_model(SMALL_MODEL).eval()
    predicted = predict(model, np.zeros((3, 64, 64), np.uint8))
    assert predicted.shape == (3, 7) and np.isnan(predicted[:, 6]).all()
    np.testing.assert_allclose(predicted[:, :6].sum(1), 1, atol=1e-5)


@pytest.mark.slow
def test_trained_with_crps_the_head_learns_the_percent_of_a_few_crops():
    """Eight crops whose brightness gives their %: the training step brings the predicted % close to it."""
    torch.manual_seed(0)
    pct = torch.tensor([0, 0, 10, 25, 45, 60, 85, 100], dtype=torch.float32)
    pixels = (pct[:, None, None] * 2.5).to(torch.uint8).expand(-1, 64, 64).contiguous()
    labels = torch.from_numpy(domain.ratingen_stage(pct.numpy()).astype(np.int64))
    model = build_model(SMALL_CDF)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    weights, generator = torch.ones(domain.NUM_STAGES), torch.Generator()
    before = np.abs(predict(model.eval(), pixels.numpy())[:, 6] - pct.numpy()).mean()
    for _ in range(150):
        model.train()
        step.train_step(model, optimizer, pixels, labels, weights, generator, None, pct)
    after = predict(model.eval(), pixels.numpy())
    error = np.abs(after[:, 6] - pct.numpy()).mean()
    print(f"mean absolute % error: {before:.1f} before, {error:.1f} after training")
    assert error < 5 < before
    assert (after[:, :6].argmax(1) == labels.numpy()).mean() >= 0.75


@pytest.mark.parametrize("head", ["stages", "cdf"])
def test_predict_in_cpu_chunks_on_a_model_for_inference_gives_the_plain_forward_pass(head):
    """More crops than one CPU chunk (network.CPU_CHUNK_PIXELS): the chunks of a model made ready for inference
    (batch norms folded into the layers before them, channels-last), put together, are the untouched model's
    single forward pass over all of them, with batch norms whose statistics and scales are not the initial ones."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL_MODEL, head=head))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        for _ in range(3):  # running statistics of a few batches, as training leaves them
            model(torch.rand(16, 1, 64, 64))
    model.eval()
    rows = 3 * (CPU_CHUNK_PIXELS // SMALL_MODEL.input_size**2) + 5
    pixels = np.random.default_rng(1).integers(0, 256, (rows, 64, 64), dtype=np.uint8)
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels).unsqueeze(1).float() / 255)
    mass = torch.softmax(logits, dim=1)
    if head == "cdf":  # the stage probabilities and the expected % of the 101 bins
        mass = torch.cat([cdf.stage_probabilities(mass), cdf.expected_pct(mass)[:, None]], dim=1)
    expected = mass.numpy()
    kept = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    ready = for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in ready.modules())
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in kept.items())  # what checkpoints hold
    assert set(model.state_dict()) == set(kept)
    predicted = predict(ready, pixels)
    assert predicted.shape == (rows, 7)
    np.testing.assert_allclose(predicted[:, :6], expected[:, :6], atol=1e-5)
    if head == "cdf":  # the % eroded, 0-100
        np.testing.assert_allclose(predicted[:, 6], expected[:, 6], atol=1e-3)
