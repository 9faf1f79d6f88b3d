"""Preparing examples for training: validation, the stratified holdout, per-head label arrays."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from understudy.errors import InsufficientData
from understudy.tasks import Example, Task

# Below this many labelled examples per head a student cannot be trained and calibrated sensibly.
MIN_EXAMPLES = 8


def check_examples(task: Task, examples: Sequence[Example]) -> None:
    """Raise InsufficientData unless every head has ≥ MIN_EXAMPLES labels and ≥ 2 distinct ones.

    Labels that are not among the head's labels are rejected too (they cannot be predicted).
    """
    for head in task.heads:
        labels = [e.labels[head.name] for e in examples if head.name in e.labels]
        unknown = sorted(set(labels) - set(head.labels))
        if unknown:
            raise InsufficientData(f"head {head.name!r} has labels {unknown} not in its schema")
        if len(labels) < MIN_EXAMPLES or len(set(labels)) < 2:
            raise InsufficientData(
                f"head {head.name!r} needs at least {MIN_EXAMPLES} labelled examples with two "
                f"distinct labels to train a student; it has {len(labels)} with "
                f"{len(set(labels))} distinct"
            )


def split_holdout(
    examples: Sequence[Example], task: Task, fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split into (train, holdout), stratified on the first head's label.

    Each label group gives ``round(n * fraction)`` examples to the holdout, at least one when the
    group has ≥ 3 (so every label is seen both in training and in calibration), never all of them.
    """
    rng = random.Random(seed)
    first = task.heads[0].name
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        groups[example.labels.get(first, "")].append(example)
    train: list[Example] = []
    holdout: list[Example] = []
    for key in sorted(groups):
        group = list(groups[key])
        rng.shuffle(group)
        n_holdout = round(len(group) * fraction)
        if len(group) >= 3:
            n_holdout = max(n_holdout, 1)
        n_holdout = min(n_holdout, len(group) - 1)
        holdout.extend(group[:n_holdout])
        train.extend(group[n_holdout:])
    rng.shuffle(train)
    rng.shuffle(holdout)
    return train, holdout


def label_counts(task: Task, examples: Sequence[Example]) -> dict[str, dict[str, int]]:
    """Head name -> label -> number of examples carrying it."""
    return {
        head.name: dict(Counter(e.labels[head.name] for e in examples if head.name in e.labels))
        for head in task.heads
    }


def data_hash(examples: Sequence[Example]) -> str:
    """sha256 of the examples' text, labels, source and weight, independent of their order."""
    lines = sorted(
        json.dumps(
            [e.text, e.labels, str(e.source), e.weight, e.soft_labels],
            sort_keys=True,
            ensure_ascii=False,
        )
        for e in examples
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()
