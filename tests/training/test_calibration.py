"""Temperature scaling: recovers a known temperature and lowers calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from understudy.training import calibrate, fit_temperature


def _sample(n: int, true_temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, 4))
    scaled = logits / true_temperature
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(4, p=p) for p in probs], dtype=np.int64)
    return logits, targets


def test_fit_temperature_recovers_the_true_temperature() -> None:
    logits, targets = _sample(4000, true_temperature=2.5, seed=0)
    assert fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.1)


def test_calibration_lowers_ece_of_an_overconfident_model() -> None:
    logits, targets = _sample(3000, true_temperature=3.0, seed=1)
    result = calibrate(logits, targets)
    assert result.ece_before > 0.1
    assert result.ece_after < result.ece_before / 3
    assert result.n_holdout == 3000


def test_tiny_perfect_holdout_does_not_collapse_the_temperature() -> None:
    # Twelve correct answers: plain NLL would push T to its lower bound; the prior keeps it sane.
    logits = np.tile([[2.0, 0.0]], (12, 1))
    targets = np.zeros(12, dtype=np.int64)
    assert 0.2 < fit_temperature(logits, targets) <= 1.0


def test_no_examples_gives_the_identity_temperature() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)) == 1.0
