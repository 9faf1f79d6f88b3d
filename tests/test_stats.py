import math

import pytest

from understudy.stats import (
    Z_ONE_SIDED_95,
    one_sided_z,
    wilson_interval,
    wilson_lower_bound,
    wilson_upper_bound,
)


def test_wilson_interval_matches_the_closed_form() -> None:
    # 95/100 with z = 1.645: the textbook Wilson bounds.
    lower, upper = wilson_interval(95, 100)
    assert lower == pytest.approx(0.9008, abs=1e-3)
    assert upper == pytest.approx(0.9755, abs=1e-3)


def test_all_successes_need_many_trials_to_clear_a_high_target() -> None:
    assert wilson_lower_bound(100, 100) < 0.98
    assert wilson_lower_bound(200, 200) > 0.98


def test_interval_contains_the_point_estimate_and_narrows_with_trials() -> None:
    narrow = wilson_interval(900, 1000)
    wide = wilson_interval(9, 10)
    assert narrow[0] < 0.9 < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_no_trials_means_no_information() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert math.isclose(wilson_upper_bound(0, 30), 0.0827, abs_tol=1e-3)


def test_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_one_sided_z_is_the_normal_quantile() -> None:
    assert one_sided_z(0.95) == pytest.approx(Z_ONE_SIDED_95)
    assert one_sided_z(0.999) == pytest.approx(3.0902, abs=1e-4)
    with pytest.raises(ValueError):
        one_sided_z(1.0)
