import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from erosion.core import domain


@pytest.mark.parametrize(
    "pct, stage",
    [
        (0, 0),
        (0.1, 1),
        (20, 1),
        (20.1, 2),
        (40, 2),
        (40.1, 3),
        (60, 3),
        (60.1, 4),
        (80, 4),
        (80.1, 5),
        (100, 5),
    ],
)
def test_stage_boundaries(pct, stage):
    assert domain.ratingen_stage(pct) == stage


def test_stage_of_an_array_matches_scalars():
    pcts = np.array([0, 0.1, 20, 20.1, 80, 80.1, 100])
    assert domain.ratingen_stage(pcts).tolist() == [domain.ratingen_stage(p) for p in pcts]


@pytest.mark.parametrize("pct", [-0.1, 100.1, float("nan")])
def test_stage_rejects_pct_out_of_range(pct):
    with pytest.raises(ValueError, match=r"erosion_pct must lie in \[0, 100\]"):
        domain.ratingen_stage(pct)


def test_rau_extrapolates_to_38_joints():
    # A left-hand visit: stages 0,1,1,2,0 (MCP) and 3,0,0,1,5 (PIP): sum 13 over 10 joints -> 13 * 38 / 10 = 49.4.
    stages = {f"hand_left/mcp{i}": s for i, s in enumerate([0, 1, 1, 2, 0], 1)}
    stages |= {f"hand_left/pip{i}": s for i, s in enumerate([3, 0, 0, 1, 5], 1)}
    rau = domain.rau_score(stages)
    assert (rau.joints_scored, rau.stage_sum) == (10, 13)
    assert rau.rau == pytest.approx(49.4)
    assert rau.joints[0] == "hand_left/mcp1" and len(rau.joints) == 10


def test_rau_of_all_32_joints_at_stage_5_is_190():
    assert domain.rau_score({f"j{i}": 5 for i in range(32)}).rau == pytest.approx(5 * 38)


def test_rau_of_a_visit_without_scored_joints_is_none_not_zero():
    rau = domain.rau_score({})
    assert rau.rau is None and rau.joints_scored == 0


def test_rau_rejects_a_stage_out_of_range():
    with pytest.raises(ValueError, match="hand_left/pip1"):
        domain.rau_score({"hand_left/pip1": 6})


def test_class_weights_equal_scikit_learn_balanced():
    y = np.random.default_rng(0).choice(6, size=5000, p=[0.675, 0.272, 0.023, 0.010, 0.006, 0.014])
    expected = compute_class_weight("balanced", classes=np.arange(6), y=y)
    np.testing.assert_allclose(domain.balanced_class_weights(y), expected)


def test_absent_class_gets_the_largest_present_weight():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    weights = domain.balanced_class_weights(y)
    np.testing.assert_allclose(weights[:3], compute_class_weight("balanced", classes=np.arange(3), y=y))
    assert weights[3] == weights[4] == weights[5] == weights[2]
    assert np.isfinite(weights).all()


def test_class_weights_reject_bad_labels():
    with pytest.raises(ValueError, match="empty"):
        domain.balanced_class_weights([])
    with pytest.raises(ValueError, match=r"0\.\.5, got \[7\]"):
        domain.balanced_class_weights([0, 7])


def test_oversampling_brings_every_present_stage_to_about_the_commonest_count():
    y = np.array([0] * 670 + [1] * 270 + [2] * 23 + [3] * 10 + [5] * 14)  # no stage 4
    factors = domain.oversampling_factors(y)
    assert factors.tolist() == [1, 2, 29, 67, 1, 48]  # round(670 / n_k); an absent stage keeps 1
    counts = np.bincount(y, minlength=6) * factors
    present = counts > 0
    assert (np.abs(counts[present] - 670) <= 0.5 * np.bincount(y, minlength=6)[present]).all()  # within half a copy
    with pytest.raises(ValueError, match="empty"):
        domain.oversampling_factors(np.zeros(0, dtype=np.int64))


def test_joint_vocabulary():
    assert domain.joint_problem("hand_left", "mcp3") is None
    assert domain.joint_problem("foot_right", "mtp5") is None
    assert "unknown joint 'dip2'" in domain.joint_problem("hand_left", "dip2")
    assert "unknown body_part 'knee'" in domain.joint_problem("knee", "mcp1")
    assert "does not belong" in domain.joint_problem("foot_left", "pip1")
    assert len(domain.HAND_JOINTS) == 11 and len(domain.FOOT_JOINTS) == 5
