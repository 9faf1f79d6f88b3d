"""The probe's regularisation search: strong where features are mostly noise, weak where the
signal is clean, and a safe default when a label is too rare to cross-validate; no weight blows
up on a feature that never varies."""

from __future__ import annotations

import numpy as np

from understudy.tasks import Head
from understudy.training.probe import C_GRID, FALLBACK_C, choose_c, fit_linear_head


def test_noisy_features_get_strong_regularisation() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    features = rng.normal(size=(120, 300))  # 300 dimensions of noise ...
    features[:, 0] += 0.8 * (2 * labels - 1)  # ... and one weak signal
    chosen = choose_c(features, [str(y) for y in labels], np.ones(120), seed=0)
    assert chosen == min(C_GRID)


def test_a_clean_signal_gets_weak_regularisation() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = rng.normal(size=(300, 4)) * 0.1
    features[np.arange(300), labels] += 1.0  # each class lights up its own feature
    chosen = choose_c(features, [str(y) for y in labels], np.ones(300), seed=0)
    assert chosen == max(C_GRID)


def test_a_label_seen_once_falls_back_to_the_default() -> None:
    rng = np.random.default_rng(0)
    labels = ["a"] * 20 + ["b"] * 20 + ["c"]
    assert choose_c(rng.normal(size=(41, 8)), labels, np.ones(41), seed=0) == FALLBACK_C


def test_a_feature_that_never_varies_gets_no_huge_weight() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    features = rng.normal(size=(80, 6))
    features[:, 0] += 2.0 * labels
    features[:, 5] = 1e-33 * rng.normal(size=80)  # as one of MiniLM's mean-pooled dimensions
    head = Head("label", ("0", "1"))
    weight, bias = fit_linear_head(head, features, [str(y) for y in labels], np.ones(80), 1.0, 0)
    assert np.abs(weight).max() < 10 and np.isfinite(bias).all()
    assert np.abs(weight[:, 0]).max() == np.abs(weight).max()
