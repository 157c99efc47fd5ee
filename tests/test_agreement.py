import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from erosion.core import agreement


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


SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
"""Shrout and Fleiss (1979), Table 2: six targets rated by four judges."""


def _pairs(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.choice(6, size=n, p=[0.6, 0.25, 0.06, 0.04, 0.03, 0.02])
    return a, np.clip(a + rng.integers(-2, 3, size=n), 0, 5)


@pytest.mark.parametrize("seed", range(4))
def test_quadratic_kappa_and_its_interval_equal_scikit_learn_and_statsmodels(seed):
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import cohens_kappa

    a, b = _pairs(seed)
    kappa = agreement.quadratic_kappa(a, b)
    assert kappa.value == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-9)
    oracle = cohens_kappa(agreement.confusion_matrix(a, b), wt="quadratic")
    assert (kappa.low, kappa.high) == pytest.approx((oracle.kappa_low, oracle.kappa_upp), abs=1e-9)


def test_kappa_edge_cases():
    a = np.array([0, 1, 2, 3, 4, 5, 0, 0])
    assert agreement.quadratic_kappa(a, a).value == pytest.approx(1.0)
    b = np.where(a == 5, 4, a)  # stage 5 missing from one rater
    assert agreement.quadratic_kappa(a, b).value == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    with pytest.raises(ValueError, match="undefined"):
        agreement.quadratic_kappa(np.zeros(5, int), np.zeros(5, int))  # a single class
    with pytest.raises(ValueError, match="empty"):
        agreement.quadratic_kappa(np.array([], int), np.array([], int))  # two raters with no joint in common
    with pytest.raises(ValueError, match="one length"):
        agreement.quadratic_kappa(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match=r"0\.\.5"):
        agreement.quadratic_kappa(np.array([1, 6]), np.array([1, 2]))


@pytest.mark.parametrize("seed", range(3))
def test_wald_intervals_of_the_accuracies(seed):
    from statsmodels.stats.proportion import proportion_confint

    a, b = _pairs(seed)
    cm = agreement.confusion_matrix(a, b)
    overall = agreement.global_accuracy_ci(cm)
    low, high = proportion_confint(int(np.trace(cm)), int(cm.sum()), method="normal")
    assert (overall.value, overall.low, overall.high) == pytest.approx((np.mean(a == b), low, high), abs=1e-9)
    # The balanced form: per-class Wald variances r (1 - r) / n_c, averaged over the C classes present.
    recalls = [np.mean(b[a == c] == c) for c in np.unique(a)]
    sizes = [np.sum(a == c) for c in np.unique(a)]
    half = 1.959963984540054 * np.sqrt(sum(r * (1 - r) / m for r, m in zip(recalls, sizes, strict=True))) / len(sizes)
    balanced = agreement.balanced_accuracy_ci(cm)
    assert balanced.value == pytest.approx(balanced_accuracy_score(a, b), abs=1e-12)
    assert (balanced.low, balanced.high) == pytest.approx((balanced.value - half, balanced.value + half), abs=1e-9)
    pm1 = agreement.pm1_balanced_accuracy_ci(cm)
    assert pm1.value == pytest.approx(_pm1_oracle(a, b), abs=1e-12) and pm1.low <= pm1.value <= pm1.high <= 1


@pytest.mark.parametrize("seed", range(3))
def test_every_icc_form_equals_pingouin(seed):
    import pandas as pd
    import pingouin

    rng = np.random.default_rng(seed)
    truth = rng.choice(6, size=40, p=[0.5, 0.3, 0.1, 0.05, 0.03, 0.02])
    x = np.clip(truth[:, None] + rng.integers(-1, 2, size=(40, 3)), 0, 5)
    long = pd.DataFrame([(i, j, x[i, j]) for i in range(40) for j in range(3)], columns=["joint", "rater", "stage"])
    oracle = pingouin.intraclass_corr(long, targets="joint", raters="rater", ratings="stage").set_index("Type")
    names = {"ICC1": "ICC(1,1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)", "ICC1k": "ICC(1,k)", "ICC2k": "ICC(A,k)"}
    for form, name in (names | {"ICC3k": "ICC(C,k)"}).items():
        mine, theirs = agreement.icc(x, form), oracle.loc[name]
        assert (mine.value, mine.f, mine.p) == pytest.approx((theirs["ICC"], theirs["F"], theirs["pval"]), abs=1e-9)
        assert (mine.df1, mine.df2) == (theirs["df1"], theirs["df2"])
        assert list(np.round([mine.low, mine.high], 2)) == pytest.approx(
            list(theirs["CI95"]), abs=1e-9
        )  # pingouin rounds


def test_icc_reproduces_shrout_and_fleiss_table_4():
    published = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}
    for form, value in published.items():
        assert round(agreement.icc(SHROUT_FLEISS, form).value, 2) == value
    assert agreement.icc(SHROUT_FLEISS, "ICC3").label == "good" and agreement.cicchetti(0.3) == "poor"
    with pytest.raises(ValueError, match="every rating is the same"):
        agreement.icc(np.ones((5, 3)))
    with pytest.raises(ValueError, match="n targets x k raters"):
        agreement.icc(np.ones((5, 1)))


def test_venn_counts_by_hand():
    a = np.array([0, 1, 2, 3, 4, 5, 1])
    b = np.array([0, 1, 2, 0, 4, 0, 2])
    c = np.array([0, 2, 1, 3, 0, 4, 3])
    # joint 0 all; 1 a=b; 2 a=b; 3 a=c; 4 a=b; 5 b? no pair (5,0,4); 6 none (1,2,3)
    assert agreement.venn_counts(a, b, c) == {"all": 1, "only_ab": 3, "only_ac": 1, "only_bc": 0, "none": 2}
    with pytest.raises(ValueError, match="no joint"):
        agreement.venn_counts(np.array([]), np.array([]), np.array([]))


def test_the_expected_confusion_of_calibrated_probabilities_predicts_the_measured_agreement():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.array([6.0, 3.0, 1.0, 0.6, 0.4, 0.4]) * 0.8, size=40_000)
    predicted = probs.argmax(axis=1)
    expected = agreement.expected_confusion(probs, predicted)
    assert expected.sum() == pytest.approx(len(probs))
    np.testing.assert_allclose(expected.sum(axis=0), np.bincount(predicted, minlength=6))  # columns: the model's
    np.testing.assert_allclose(expected.sum(axis=1), probs.sum(axis=0))  # rows: the rater's expected stages
    # a rater whose stages follow the probabilities (calibrated by construction), drawn: scikit-learn's figures
    rated = (rng.random(len(probs))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, 5)
    assert agreement.balanced_accuracy(expected) == pytest.approx(balanced_accuracy_score(rated, predicted), abs=0.02)
    assert agreement.global_accuracy(expected) == pytest.approx(accuracy_score(rated, predicted), abs=0.01)
    kappa = cohen_kappa_score(rated, predicted, weights="quadratic")
    assert agreement.confusion_kappa(expected).value == pytest.approx(kappa, abs=0.02)
    halves = agreement.expected_confusion(probs[:100], predicted[:100]) + agreement.expected_confusion(
        probs[100:], predicted[100:]
    )
    np.testing.assert_allclose(halves, expected)  # batches add up
