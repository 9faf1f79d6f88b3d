"""The probe's regularisation search: strong where features are mostly noise, weak where the
signal is clean, and a safe default when a label is too rare to cross-validate."""

from __future__ import annotations

import numpy as np

from understudy.training.probe import C_GRID, FALLBACK_C, choose_c


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
