import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from erosion import agreement


def _pm1_oracle(reference: np.ndarray, predicted: np.ndarray) -> float:
    """scikit-learn's balanced accuracy after counting a prediction within one stage as the reference's stage."""
    near = np.where(np.abs(predicted - reference) <= 1, reference, predicted)
    return balanced_accuracy_score(reference, near)


@pytest.mark.parametrize("seed", range(5))
def test_accuracies_equal_scikit_learn_on_random_stages(seed):
    rng = np.random.default_rng(seed)
    reference = rng.choice(6, size=500, p=[0.675, 0.272, 0.023, 0.01, 0.006, 0.014])
    predicted = np.clip(reference + rng.integers(-2, 3, size=500), 0, 5)
    cm = agreement.confusion_matrix(reference, predicted)
    np.testing.assert_array_equal(cm, sk_confusion_matrix(reference, predicted, labels=range(6)))
    assert agreement.global_accuracy(cm) == pytest.approx(accuracy_score(reference, predicted), abs=1e-12)
    assert agreement.balanced_accuracy(cm) == pytest.approx(balanced_accuracy_score(reference, predicted), abs=1e-12)
    assert agreement.pm1_balanced_accuracy(cm) == pytest.approx(_pm1_oracle(reference, predicted), abs=1e-12)


def test_a_class_missing_from_the_reference_is_left_out_of_the_mean():
    reference = np.array([0, 0, 1, 1, 5])
    predicted = np.array([0, 2, 1, 3, 5])  # predicts 2 and 3, which the reference never has
    cm = agreement.confusion_matrix(reference, predicted)
    with pytest.warns(UserWarning):  # scikit-learn warns about the classes only in the prediction
        expected = balanced_accuracy_score(reference, predicted)
    assert agreement.balanced_accuracy(cm) == pytest.approx(expected)
    assert agreement.balanced_accuracy(cm) == pytest.approx((0.5 + 0.5 + 1) / 3)


def test_perfect_agreement_and_bad_input():
    cm = agreement.confusion_matrix(np.arange(6), np.arange(6))
    assert agreement.global_accuracy(cm) == agreement.balanced_accuracy(cm) == agreement.pm1_balanced_accuracy(cm) == 1
    with pytest.raises(ValueError, match="empty"):
        agreement.balanced_accuracy(agreement.confusion_matrix(np.array([], int), np.array([], int)))
    with pytest.raises(ValueError, match="0..5"):
        agreement.confusion_matrix(np.array([0, 6]), np.array([0, 1]))
    with pytest.raises(ValueError, match="one length"):
        agreement.confusion_matrix(np.array([0, 1]), np.array([0]))
