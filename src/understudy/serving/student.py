"""What every served student offers (the ``Student`` protocol) and logits -> calibrated answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from understudy.tasks import Head, Prediction

FloatArray = npt.NDArray[np.float64]

NETWORK_CHUNK = 128
"""Most texts an encoder student runs through its network at once. A long list (an evaluation's
thousands of held-out calls) goes through in chunks, so memory stays bounded (in one batch of
2,551 texts, ONNX Runtime's arena grew by gigabytes per session) and each chunk is padded only to
its own longest text."""


@runtime_checkable
class Student(Protocol):
    """A loaded student: answers texts with a label and calibrated probabilities per head.

    ``predict`` is thread-safe and returns one ``Prediction`` per text, in order.
    """

    task_key: str
    version: str
    kind: str
    heads: tuple[Head, ...]

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Predict labels and calibrated probabilities for each text."""
        ...


def softmax(logits: FloatArray, temperature: float = 1.0) -> FloatArray:
    """Row-wise ``softmax(logits / temperature)`` for logits [N, K]; ``-inf`` logits get 0."""
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    result: FloatArray = exp / exp.sum(axis=1, keepdims=True)
    return result


def chunked_logits(
    texts: Sequence[str], network_logits: Callable[[Sequence[str]], dict[str, FloatArray]]
) -> dict[str, FloatArray]:
    """``network_logits`` (logits per head, [N, labels]) over ``texts`` in ``NETWORK_CHUNK``-text
    chunks, concatenated in order; ``texts`` must not be empty."""
    chunks = [
        network_logits(texts[start : start + NETWORK_CHUNK])
        for start in range(0, len(texts), NETWORK_CHUNK)
    ]
    return {head: np.concatenate([chunk[head] for chunk in chunks]) for head in chunks[0]}


def predictions_from_logits(
    heads: Sequence[Head],
    logits: Mapping[str, FloatArray],
    temperatures: Mapping[str, float],
) -> list[Prediction]:
    """One ``Prediction`` per row from logits per head ([N, len(head.labels)], ``Head.labels``
    column order), calibrated with ``softmax(logits / temperatures[head])`` (default 1.0)."""
    probs = {
        h.name: softmax(np.asarray(logits[h.name], dtype=np.float64), temperatures.get(h.name, 1.0))
        for h in heads
    }
    count = len(next(iter(probs.values()))) if probs else 0
    predictions = []
    for row in range(count):
        labels: dict[str, str] = {}
        head_probs: dict[str, dict[str, float]] = {}
        for h in heads:
            p = probs[h.name][row]
            labels[h.name] = h.labels[int(np.argmax(p))]
            head_probs[h.name] = {label: float(v) for label, v in zip(h.labels, p, strict=True)}
        predictions.append(Prediction(labels=labels, probs=head_probs))
    return predictions
