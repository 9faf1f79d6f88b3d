"""Metrics math: accuracy, macro-F1, ECE, coverage curve and the threshold picker."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from understudy.evaluation import (
    accuracy,
    coverage_curve,
    expected_calibration_error,
    macro_f1,
    pick_threshold,
    wilson_lower_bound,
)


def test_accuracy_and_macro_f1_on_a_worked_example() -> None:
    reference = ["a", "a", "a", "b"]
    predicted = ["a", "a", "b", "b"]
    assert accuracy(reference, predicted) == 0.75
    # F1(a) = 2*2/(2*2+0+1) = 0.8, F1(b) = 2*1/(2*1+1+0) = 2/3.
    assert macro_f1(reference, predicted) == pytest.approx((0.8 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="length mismatch"):
        accuracy(["a"], [])


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident() -> None:
    confident = [0.75] * 4
    assert expected_calibration_error(confident, [True, True, True, False]) == pytest.approx(0.0)
    assert expected_calibration_error([0.99] * 4, [True, False, True, False]) == pytest.approx(0.49)
    assert expected_calibration_error([], []) == 0.0


def test_coverage_curve_answers_everything_at_the_lowest_threshold() -> None:
    conf = [0.9, 0.6, 0.9, 0.7]
    agrees = [True, False, True, True]
    curve = coverage_curve(conf, agrees)
    assert [p.threshold for p in curve] == [0.6, 0.7, 0.9]
    assert [p.coverage for p in curve] == [1.0, 0.75, 0.5]
    assert [p.agreement for p in curve] == [0.75, 1.0, 1.0]
    assert curve[1].lower_bound == pytest.approx(wilson_lower_bound(3, 3))


def test_downsampled_curve_keeps_full_coverage_and_order() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 1000)
    agrees = rng.uniform(size=1000) < conf
    curve = coverage_curve(conf.tolist(), agrees.tolist(), points=10)
    assert len(curve) == 10
    assert curve[0].coverage == 1.0
    assert all(a.threshold < b.threshold for a, b in itertools.pairwise(curve))


def test_pick_threshold_requires_the_lower_bound_not_just_the_rate() -> None:
    # 10 of 10 agree: rate 1.0 but the one-sided 95% Wilson bound is only ~0.79.
    assert pick_threshold([0.99] * 10, [True] * 10, target=0.9) is None
    point = pick_threshold([0.99] * 100, [True] * 100, target=0.95)
    assert point is not None and point.coverage == 1.0


def test_picked_threshold_keeps_the_target_on_fresh_data() -> None:
    """Pick on one sample of a calibrated student, check agreement on another it never saw."""
    rng = np.random.default_rng(7)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        conf = rng.beta(8, 1, n)  # a calibrated student: P(agree | confidence c) = c
        return conf, rng.uniform(size=n) < conf

    target = 0.95
    conf, agrees = sample(4000)
    point = pick_threshold(conf.tolist(), agrees.tolist(), target)
    assert point is not None
    assert 0.2 < point.coverage < 0.9  # the target costs coverage but is reachable
    fresh_conf, fresh_agrees = sample(20000)
    answered = fresh_conf >= point.threshold
    assert fresh_agrees[answered].mean() >= target
