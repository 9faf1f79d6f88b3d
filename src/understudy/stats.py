"""Small statistics shared by evaluation and routing: confidence bounds on proportions."""

from __future__ import annotations

import math
from statistics import NormalDist

# One-sided 95% normal quantile: bounds are "we are 95% sure the true rate is above/below".
Z_ONE_SIDED_95 = 1.6448536269514722


def one_sided_z(confidence: float) -> float:
    """The normal quantile for a one-sided bound at ``confidence`` (0.95 -> 1.645)."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence={confidence} outside [0.5, 1)")
    return NormalDist().inv_cdf(confidence)


def wilson_interval(successes: int, trials: int, z: float = Z_ONE_SIDED_95) -> tuple[float, float]:
    """Wilson score interval (lower, upper) for a binomial proportion; (0, 1) with no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} outside 0..trials={trials}")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def wilson_lower_bound(successes: int, trials: int, z: float = Z_ONE_SIDED_95) -> float:
    """Lower end of the Wilson interval: the rate we are confident the truth is above."""
    return wilson_interval(successes, trials, z)[0]


def wilson_upper_bound(successes: int, trials: int, z: float = Z_ONE_SIDED_95) -> float:
    """Upper end of the Wilson interval: the rate we are confident the truth is below."""
    return wilson_interval(successes, trials, z)[1]
