"""A small synthetic ticket task (topic from keywords, urgency from a marker word) and a tiny
random encoder, shared by the training tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from understudy.tasks import Example, Head, HeadKind, Task
from understudy.testing.tiny_models import write_tiny_encoder

TOPICS = {
    "billing": ["refund", "payment", "money", "bill", "charge", "price", "card"],
    "bug": ["error", "bug", "problem", "issue", "crash", "code", "update"],
    "shipping": ["delivery", "shipping", "package", "order", "item", "late", "return"],
}
FILLER = "the a my your this that is was very really please thanks hello now new old".split()  # noqa: SIM905
URGENT = ["asap", "immediately", "urgent"]

TASK = Task(
    key="tickets",
    version=1,
    schema={},
    heads=(
        Head("topic", ("billing", "bug", "shipping")),
        Head("urgent", ("false", "true"), HeadKind.BOOL),
    ),
)


def make_examples(n: int, seed: int) -> list[Example]:
    """``n`` labelled tickets: two topic keywords and filler, plus an urgency marker 40% of the
    time; labels follow the words exactly, so a good student agrees almost always."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        urgent = rng.random() < 0.4
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))]
        words += [rng.choice(TOPICS[topic]) for _ in range(2)]
        if urgent:
            words.append(rng.choice(URGENT))
        rng.shuffle(words)
        labels = {"topic": topic, "urgent": "true" if urgent else "false"}
        examples.append(Example(text=" ".join(words), labels=labels))
    return examples


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (2 layers, hidden 32) in Hugging Face format."""
    return write_tiny_encoder(tmp_path_factory.mktemp("encoder") / "tiny", seed=0)


@pytest.fixture(scope="session")
def task() -> Task:
    """The synthetic ticket task: topic (3 labels) and urgent (bool)."""
    return TASK


@pytest.fixture(scope="session")
def train_examples() -> list[Example]:
    """240 training tickets."""
    return make_examples(240, seed=1)


@pytest.fixture(scope="session")
def test_examples() -> list[Example]:
    """200 held-out tickets from another seed."""
    return make_examples(200, seed=2)
