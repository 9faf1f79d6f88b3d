"""Pure metrics on arrays of predictions: accuracy, macro-F1, calibration error, coverage curves.

Confidences are probabilities in [0, 1]; ``agrees`` marks whether the student's label equals the
reference label. Nothing here knows about tasks or students, so routing and benchmarks reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from understudy.stats import Z_ONE_SIDED_95, wilson_lower_bound

# 15 equal-width bins is the usual ECE setting (Guo et al., 2017), so numbers compare to papers.
ECE_BINS = 15


def accuracy(reference: Sequence[str], predicted: Sequence[str]) -> float:
    """Fraction of positions where ``predicted`` equals ``reference`` (0.0 when empty)."""
    if len(reference) != len(predicted):
        raise ValueError(
            f"length mismatch: {len(reference)} references, {len(predicted)} predictions"
        )
    if not reference:
        return 0.0
    return sum(r == p for r, p in zip(reference, predicted, strict=True)) / len(reference)


def macro_f1(reference: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean of per-label F1 over the labels present in ``reference`` or ``predicted``."""
    if len(reference) != len(predicted):
        raise ValueError(
            f"length mismatch: {len(reference)} references, {len(predicted)} predictions"
        )
    labels = sorted(set(reference) | set(predicted))
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        tp = sum(r == label and p == label for r, p in zip(reference, predicted, strict=True))
        fp = sum(r != label and p == label for r, p in zip(reference, predicted, strict=True))
        fn = sum(r == label and p != label for r, p in zip(reference, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = ECE_BINS
) -> float:
    """Expected calibration error of top-label confidences, equal-width bins over [0, 1].

    The weighted mean over bins of |accuracy - mean confidence|; 0.0 when empty.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    # Bin i holds (edge_i, edge_i+1]; confidence 0 goes to the first bin.
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(hits[mask].mean() - conf[mask].mean())
    return float(total / conf.size)


@dataclass(frozen=True)
class CurvePoint:
    """The student answering only when its confidence is ≥ ``threshold``.

    ``coverage``: fraction of calls answered; ``agreement``: fraction of answered calls whose label
    matches the reference; ``lower_bound``: one-sided 95% Wilson lower bound of that agreement.
    """

    threshold: float
    coverage: float
    agreement: float
    answered: int
    lower_bound: float

    def to_json(self) -> dict[str, float | int]:
        """The point as a JSON-ready dict."""
        return asdict(self)


def coverage_curve(
    confidences: Sequence[float],
    agrees: Sequence[bool],
    *,
    points: int | None = None,
    z: float = Z_ONE_SIDED_95,
) -> list[CurvePoint]:
    """Agreement-vs-coverage curve, ordered from the lowest threshold (full coverage) upwards.

    With ``points=None`` there is one point per distinct confidence value; otherwise at most
    ``points`` points evenly spaced in coverage (for reports and plots).
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(agrees, dtype=bool)
    if conf.shape != hits.shape:
        raise ValueError(f"shape mismatch: {conf.shape} confidences, {hits.shape} agreements")
    n = conf.size
    if n == 0:
        return []
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    cumulative_hits = np.cumsum(hits[order])
    # Answering at threshold t means answering every call with confidence >= t: the last index of
    # each run of equal confidences (in descending order) closes one candidate threshold.
    last_of_run = np.flatnonzero(np.append(sorted_conf[1:] != sorted_conf[:-1], True))
    if points is not None and len(last_of_run) > points:
        wanted = np.linspace(1, n, points)
        picks = np.searchsorted(last_of_run + 1, wanted, side="left")
        last_of_run = np.unique(last_of_run[np.clip(picks, 0, len(last_of_run) - 1)])
    curve = []
    for index in last_of_run[::-1]:
        answered = int(index) + 1
        agreed = int(cumulative_hits[index])
        curve.append(
            CurvePoint(
                threshold=float(sorted_conf[index]),
                coverage=answered / n,
                agreement=agreed / answered,
                answered=answered,
                lower_bound=wilson_lower_bound(agreed, answered, z),
            )
        )
    return curve


def pick_threshold(
    confidences: Sequence[float],
    agrees: Sequence[bool],
    target: float,
    *,
    z: float = Z_ONE_SIDED_95,
) -> CurvePoint | None:
    """The smallest confidence threshold whose Wilson lower bound of agreement is ≥ ``target``.

    Smallest threshold = largest coverage. None when no threshold reaches the target with the
    margin (e.g. too few held-out calls to be sure), which keeps the task on the teacher.
    """
    for point in coverage_curve(confidences, agrees, z=z):
        if point.lower_bound >= target:
            return point
    return None
