"""Temperature scaling (Guo et al., 2017): one scalar per head that divides the logits.

The fitted temperature minimises the negative log-likelihood of the holdout labels plus a weak
Gaussian prior on log T centred on T = 1. The prior matters only for tiny holdouts: with a dozen
examples that are all classified correctly, plain NLL keeps falling as T -> 0 and would make the
student certain of everything; with hundreds of examples the data dominates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from understudy.evaluation.metrics import expected_calibration_error as ece
from understudy.serving.student import softmax

# Temperatures outside this range mean something else is wrong (a degenerate holdout).
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
# Standard deviation of the prior on log T: T within e^{±1} is unremarkable.
LOG_T_PRIOR_STD = 1.0

FloatArray = NDArray[np.float64]


def _nll(logits: FloatArray, targets: NDArray[np.int64], weights: FloatArray, t: float) -> float:
    scaled = logits / t
    top = scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    picked = scaled[np.arange(len(targets)), targets]
    return float(np.sum(weights * (log_norm - picked)))


def fit_temperature(
    logits: FloatArray,
    targets: NDArray[np.int64],
    weights: FloatArray | None = None,
) -> float:
    """The temperature T > 0 that best calibrates ``softmax(logits / T)`` for ``targets``.

    ``logits``: [N, C]; ``targets``: [N] class indices; ``weights``: [N] example weights (default
    1). Returns 1.0 with no examples.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if len(targets) == 0:
        return 1.0
    # -inf logits (labels a head never saw) would turn into NaN in the objective; a large finite
    # negative gives them the same ~0 probability.
    logits = np.where(np.isfinite(logits), logits, -1e4)
    w = np.ones(len(targets)) if weights is None else np.asarray(weights, dtype=np.float64)

    def objective(log_t: float) -> float:
        prior = 0.5 * (log_t / LOG_T_PRIOR_STD) ** 2
        return _nll(logits, targets, w, math.exp(log_t)) + prior

    result = minimize_scalar(
        objective,
        bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
        method="bounded",
    )
    return float(math.exp(result.x))


def expected_calibration_error(probs: FloatArray, targets: NDArray[np.int64]) -> float:
    """ECE of the top-label probabilities of ``probs`` [N, C] against ``targets`` [N]."""
    top = probs.argmax(axis=1)
    return ece(probs.max(axis=1).tolist(), (top == targets).tolist())


@dataclass(frozen=True)
class HeadCalibration:
    """A head's fitted temperature and its effect on the holdout (ECE before and after)."""

    temperature: float
    holdout_accuracy: float
    ece_before: float
    ece_after: float
    n_holdout: int


def calibrate(
    logits: FloatArray, targets: NDArray[np.int64], weights: FloatArray | None = None
) -> HeadCalibration:
    """Fit a head's temperature on holdout ``logits`` [N, C] and ``targets`` [N]."""
    logits = np.asarray(logits, dtype=np.float64)
    temperature = fit_temperature(logits, targets, weights)
    if len(targets) == 0:
        return HeadCalibration(temperature, 0.0, 0.0, 0.0, 0)
    return HeadCalibration(
        temperature=temperature,
        holdout_accuracy=float((logits.argmax(axis=1) == targets).mean()),
        ece_before=expected_calibration_error(softmax(logits), targets),
        ece_after=expected_calibration_error(softmax(logits, temperature), targets),
        n_holdout=len(targets),
    )
