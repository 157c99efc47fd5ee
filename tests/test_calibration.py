"""Calibration (``calibration``): a known temperature and a known prior shift recovered from synthetic logits; ECE,
NLL and Brier score against scikit-learn."""

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from erosion.model import calibration


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cumulative = probs.cumsum(axis=1)
    return (rng.random((len(probs), 1)) > cumulative).sum(axis=1).clip(0, probs.shape[1] - 1)


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_a_known_temperature_is_recovered_from_synthetic_logits(temperature):
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.standard_normal((40_000, 6))
    labels = _draw(rng, softmax(logits / temperature, axis=1))  # the truth: the logits at this temperature
    fitted = calibration.fit_temperature(softmax(logits, axis=1), labels, np.zeros(6))
    assert fitted == pytest.approx(temperature, rel=0.05)


def test_the_prior_shift_undoes_the_class_weights():
    # a weighted model's probabilities are proportional to w_k P(k | x): the shift -log w gives P(k | x) back
    rng = np.random.default_rng(1)
    weights = np.array([0.25, 0.6, 7.0, 16.0, 28.0, 12.0])
    true = softmax(2.0 * rng.standard_normal((40_000, 6)) + np.log([0.67, 0.27, 0.023, 0.01, 0.006, 0.014]), axis=1)
    weighted = true * weights / (true * weights).sum(axis=1, keepdims=True)
    labels = _draw(rng, true)
    shift = calibration.prior_shift(weights.tolist(), 6)
    np.testing.assert_allclose(calibration.apply(weighted, 1.0, shift), true, rtol=1e-6)
    assert calibration.fit_temperature(weighted, labels, shift) == pytest.approx(1.0, rel=0.05)
    before = calibration.summary(weighted, labels)
    after = calibration.summary(calibration.apply(weighted, 1.0, shift), labels)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] and after["brier"] < before["brier"]


def test_no_weights_means_no_shift():
    np.testing.assert_array_equal(calibration.prior_shift(None, 6), np.zeros(6))


def test_ece_equals_one_computed_from_scikit_learns_calibration_curve():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(6, 0.4), 5_000)
    labels = _draw(rng, softmax(np.log(probs) / 0.7, axis=1))
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(int)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.histogram(confidence, bins=np.linspace(0, 1, 16))[0]
    expected = np.sum(counts[counts > 0] / len(labels) * np.abs(accuracy - mean_confidence))
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(expected, rel=1e-9)


def test_nll_and_brier_equal_scikit_learns():
    rng = np.random.default_rng(3)
    probs, labels = rng.dirichlet(np.ones(6), 800), rng.integers(0, 6, 800)
    assert calibration.nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(6)))
    assert calibration.brier(probs, labels) == pytest.approx(brier_score_loss(labels, probs, labels=range(6)))
