"""Offline text for pretraining: the offline datasets' training texts and a task's logged inputs.

Only training-split texts are used, so a model pretrained here never saw the test sentences of the
benchmark it is later fine-tuned and scored on (nor a task's held-out calls).
"""

from __future__ import annotations

from collections.abc import Sequence

from understudy.datasets import DatasetName, load_dataset
from understudy.store.repository import Store


def dataset_texts(names: Sequence[DatasetName], *, seed: int = 0) -> list[str]:
    """Training-split texts of the named offline datasets (split with ``seed``), in order."""
    return [text for name in names for text, _ in load_dataset(name, seed=seed).train]


def task_texts(store: Store, task_key: str) -> list[str]:
    """The task's logged inputs (latest version) outside its held-out split."""
    return [example.text for example in store.examples(task_key, heldout=False)]
