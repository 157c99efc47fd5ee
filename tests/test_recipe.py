"""The training recipe's rules (``recipe``): hand-computed cases."""

import math

import pytest

from erosion.train import recipe


def test_constant_schedule_is_the_papers_fixed_rate():
    assert [recipe.learning_rate(1e-3, e, 10, "constant", 3, 0.02) for e in range(10)] == [1e-3] * 10


def test_cosine_warms_up_linearly_then_falls_to_the_floor_at_the_last_epoch():
    rates = [recipe.learning_rate(1.0, e, 13, "cosine", 3, 0.1) for e in range(13)]
    assert rates[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rates[3] == pytest.approx(1.0)  # the peak, where the cosine starts
    # halfway through the 9 decay epochs (epoch 3 + 4.5): 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert rates[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 9)))
    assert rates[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(rates[3:], rates[4:], strict=False))


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        recipe.learning_rate(1e-3, 0, 10, "step", 3, 0.02)


def test_epochs_before_best_after_cannot_be_the_best_but_the_last_epoch_always_can():
    assert [recipe.eligible(e, 10, 5) for e in range(10)] == [False] * 5 + [True] * 5
    assert [recipe.eligible(e, 3, 5) for e in range(3)] == [False, False, True]
    assert recipe.selection([0.1, 0.9], 10, 5, 1) == -1.0  # epoch 1: not eligible
    assert recipe.selection([0.1] * 6 + [0.4], 10, 5, 1) == 0.4  # window 1: the paper's rule, the epoch's own


def test_the_selection_averages_the_window_ending_with_the_epoch():
    scores = [0.2, 0.4, 0.3, 0.9, 0.5]
    assert recipe.smoothed(scores, 3) == pytest.approx([0.2, 0.3, 0.3, 1.6 / 3, 1.7 / 3])
    assert recipe.smoothed(scores, 1) == scores
    assert recipe.selection(scores, 10, 0, 3) == pytest.approx(1.7 / 3)
    # a lucky single epoch (0.9) does not hold the best smoothed score against a steady run of 0.6
    steady = [0.2, 0.9, 0.2, 0.6, 0.6, 0.6]
    assert max(range(6), key=lambda e: recipe.smoothed(steady, 3)[e]) == 5


def test_early_stopping_counts_epochs_since_the_best_eligible_one():
    # the degenerate epoch 0 (0.9) is not eligible with best_after 2; the best eligible is epoch 2 (0.5)
    scores = [0.9, 0.3, 0.5, 0.4, 0.45]
    assert not recipe.should_stop(scores, 20, 2, 3)  # 2 epochs since epoch 2
    assert recipe.should_stop([*scores, 0.5], 20, 2, 3)  # a tie does not beat it: 3 epochs since
    assert not recipe.should_stop([*scores, 0.51], 20, 2, 3)  # a better epoch resets the count
    assert not recipe.should_stop([0.1] * 30, 40, 2, 0)  # patience 0: never
    assert not recipe.should_stop([0.1, 0.1], 40, 5, 1)  # nothing eligible yet
    # smoothed over 2: 0.9 | 0.6, 0.5, 0.45, 0.45 -> the best is epoch 0's; with patience 3 it stops at epoch 3
    assert recipe.should_stop([0.9, 0.3, 0.7, 0.2, 0.7], 40, 0, 3, window=2)
    assert not recipe.should_stop([0.9, 0.3, 0.7, 0.2, 0.7], 40, 0, 5, window=2)
