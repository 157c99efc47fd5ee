import math

import torch
from conftest import SMALL_MODEL

from erosion.model.augment import NO_AUGMENTATION, AugmentConfig, affine_matrices, augment


def _batch(n: int = 4, size: int = 24) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


def test_zero_strength_is_the_identity():
    images = _batch()
    out = augment(images, NO_AUGMENTATION, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_two_samples_of_one_batch_get_different_transforms():
    image = _batch(1)
    twins = image.repeat(2, 1, 1, 1)
    out = augment(twins, AugmentConfig(), torch.Generator().manual_seed(0))
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    matrices = affine_matrices(64, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.unique(matrices[:, :, :2].reshape(64, -1), dim=0).shape[0] == 64


def test_a_certain_flip_mirrors_the_crop_exactly():
    images = _batch()
    flip_both = AugmentConfig(rotation_deg=0, stretch=0, shear=0, zoom=0, flip_probability=1.0)
    out = augment(images, flip_both, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.flip(images, dims=(2, 3)), atol=1e-5, rtol=0)


def test_rotation_stays_within_the_paper_range_and_keeps_area():
    only_rotation = AugmentConfig(rotation_deg=30, stretch=0, shear=0, zoom=0, flip_probability=0)
    m = affine_matrices(1000, only_rotation, torch.Generator().manual_seed(2))[:, :, :2]
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(1000), atol=1e-5, rtol=0)
    angles = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    assert angles.abs().max() <= math.radians(30) + 1e-6
    assert angles.abs().max() > math.radians(25)  # the range is used, not only its middle


def test_zoom_and_stretch_stay_within_ten_percent_each():
    scaling = AugmentConfig(rotation_deg=0, stretch=0.1, shear=0, zoom=0.1, flip_probability=0)
    m = affine_matrices(1000, scaling, torch.Generator().manual_seed(3))
    assert torch.all(m[:, 0, 1] == 0) and torch.all(m[:, 1, 0] == 0)
    for scale in (m[:, 0, 0], m[:, 1, 1]):
        assert scale.min() >= 0.9 * 0.9 - 1e-6 and scale.max() <= 1.1 * 1.1 + 1e-6


def test_test_time_views_are_fixed_by_their_seed_and_are_the_training_transforms():
    from erosion.model.augment import views

    assert torch.equal(views(4, seed=3), views(4, seed=3)) and not torch.equal(views(4, seed=3), views(4, seed=4))
    assert torch.equal(views(4, seed=3), affine_matrices(4, AugmentConfig(), torch.Generator().manual_seed(3)))


def test_probabilities_over_views_are_the_mean_over_the_transformed_crops():
    import numpy as np

    from erosion.model.network import ErosionCNN, probabilities

    torch.manual_seed(0)
    model = ErosionCNN(SMALL_MODEL)
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            layer.momentum = None  # statistics from the crops below, so that answers depend on the crop
    ramp = np.linspace(0, 1, 64, dtype=np.float32)[None, None, :] * np.random.default_rng(0).random((5, 64, 1))
    pixels = (255 * ramp).astype(np.uint8)  # bright on the right: a mirror image differs
    with torch.no_grad():
        model(torch.from_numpy(pixels).float().unsqueeze(1).div(255))
    model.eval()
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    mirror = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # a horizontal flip
    plain = probabilities(model, pixels)
    np.testing.assert_allclose(probabilities(model, pixels, identity[None]), plain, atol=1e-4)  # resampling rounds
    flipped = probabilities(model, np.ascontiguousarray(pixels[:, :, ::-1]))
    both = probabilities(model, pixels, torch.stack([identity, mirror]))
    np.testing.assert_allclose(both, (plain + flipped) / 2, atol=1e-4)
    assert not np.allclose(both, plain, atol=1e-3)
