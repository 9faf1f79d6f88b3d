"""The ngram fast path computes exactly what the fitted scikit-learn pipeline computes."""

from __future__ import annotations

import random
from pathlib import Path

import joblib
import numpy as np
import pytest

from understudy.serving.ngram_fast import FastNgramHead
from understudy.tasks import Example, Head, Task
from understudy.training import train_student

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "price",
    "refund",
    "order",
    "late",
    "broken",
    "great",
    "awful",
    "fine",
    "why",
    "who",
]


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(n)]


@pytest.mark.parametrize("labels", [("no", "yes"), ("a", "b", "c", "d")])
def test_fast_path_equals_the_pipeline(tmp_path: Path, labels: tuple[str, ...]) -> None:
    head = Head("label", labels)
    task = Task("t", 1, {}, (head,))
    train = [
        Example(text, {"label": labels[WORDS.index(text.split()[0]) % len(labels)]})
        for text in texts(300, seed=1)
    ]
    train_student("ngram", task, train, tmp_path)
    pipeline = joblib.load(tmp_path / "ngram.joblib")["label"]
    probe = [*texts(50, seed=2), "", "UNSEEN words ONLY!!", "Alpha, BETA; gamma?"]
    fast = FastNgramHead(pipeline).predict_proba(probe)
    assert fast.shape == (len(probe), len(labels))
    np.testing.assert_allclose(fast, pipeline.predict_proba(probe), rtol=0, atol=1e-12)
