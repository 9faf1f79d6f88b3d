"""Replay a labelled dataset through a running gateway with the real ``openai`` client.

Used by ``understudy demo`` and ``bench/e2e.py``: a *scenario* turns a dataset into a classification
task (prompt template + ``json_schema``), a fake teacher that answers from the dataset's labels
(with a little deterministic noise, like an LLM's own mistakes), and a stream of calls.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai

from understudy.datasets import LabelledDataset
from understudy.testing.fake_teacher import FakeTeacher


@dataclass(frozen=True)
class Scenario:
    """A dataset dressed as an LLM classification task.

    ``prompt`` is the user-message template with one ``{text}`` slot; the task's schema has one
    enum field, ``field``, whose values are the dataset's labels.
    """

    task: str
    field: str
    prompt: str
    dataset: LabelledDataset

    @property
    def schema(self) -> dict[str, Any]:
        """The ``json_schema`` the client asks the teacher for."""
        return {
            "type": "object",
            "properties": {self.field: {"type": "string", "enum": list(self.dataset.labels)}},
            "required": [self.field],
            "additionalProperties": False,
        }

    def request(self, text: str) -> dict[str, Any]:
        """Keyword arguments of ``client.chat.completions.create`` for one text."""
        return {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a careful classifier."},
                {"role": "user", "content": self.prompt.format(text=text)},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": self.task, "schema": self.schema, "strict": True},
            },
        }

    def stream(self, calls: int) -> list[tuple[str, str]]:
        """The first ``calls`` (text, gold label) pairs of train then test, cycling if needed."""
        rows = self.dataset.train + self.dataset.test
        return [rows[i % len(rows)] for i in range(calls)]


SCENARIOS: dict[str, tuple[str, str, str]] = {
    # dataset name -> (task key, field, prompt template)
    "rt-sentiment": (
        "movie_review_sentiment",
        "verdict",
        "Would this critic's snippet go on a fresh or a rotten review?\n\nSnippet: {text}",
    ),
    "trec6": (
        "question_type",
        "answer_type",
        "What kind of answer does this question expect?\n\nQuestion: {text}",
    ),
}


def scenario_for(dataset: LabelledDataset) -> Scenario:
    """The scenario of a dataset in ``SCENARIOS``."""
    task, field, prompt = SCENARIOS[dataset.name]
    return Scenario(task=task, field=field, prompt=prompt, dataset=dataset)


def flipped(text: str, noise: float, seed: int) -> bool:
    """Whether the fake teacher gets this text wrong: fixed per text, true for ``noise`` of them."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < noise


def teacher_label(scenario: Scenario, text: str, gold: str, noise: float, seed: int) -> str:
    """The fake teacher's answer for a text: its gold label, except for a fixed ``noise`` share
    of texts that get the next label (the same one every time, as a temperature-0 LLM repeats
    its mistakes)."""
    labels = scenario.dataset.labels
    if flipped(text, noise, seed):
        return labels[(labels.index(gold) + 1) % len(labels)]
    return gold


def dataset_teacher(
    scenario: Scenario,
    *,
    noise: float = 0.01,
    latency_ms: float = 400.0,
    seed: int = 0,
    model: str = "gpt-4o-mini",
) -> FakeTeacher:
    """A fake teacher answering each prompt with ``teacher_label`` of its text, after
    ``latency_ms``, reporting ``model`` (so its tokens are priced like that model's)."""
    prefix, suffix = scenario.prompt.split("{text}")
    gold = dict(scenario.dataset.train + scenario.dataset.test)
    fallback = scenario.dataset.labels[0]

    def label_fn(schema: dict[str, Any], user_text: str) -> dict[str, Any]:
        text = user_text.removeprefix(prefix).removesuffix(suffix)
        return {
            scenario.field: teacher_label(scenario, text, gold.get(text, fallback), noise, seed)
        }

    return FakeTeacher(label_fn, latency_ms=latency_ms, seed=seed, model=model)


@dataclass(frozen=True)
class ReplayResult:
    """One replayed call: the answer the client got and who gave it (``error`` set on failure)."""

    index: int
    gold: str
    label: str | None
    answered_by: str | None
    latency_ms: float
    request_id: str | None
    error: str | None = None


def replay(
    base_url: str,
    scenario: Scenario,
    stream: Sequence[tuple[str, str]],
    *,
    concurrency: int = 8,
    on_result: Callable[[ReplayResult], None] | None = None,
    api_key: str = "understudy-demo",
) -> list[ReplayResult]:
    """Send every text of ``stream`` through the gateway at ``base_url`` (ending in ``/v1``).

    ``concurrency`` client threads share the stream; ``on_result`` is called (from those
    threads) after each call. Results come back in stream order.
    """
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60.0)
    results: list[ReplayResult | None] = [None] * len(stream)
    lock = threading.Lock()

    def one(index: int) -> None:
        text, gold = stream[index]
        started = time.perf_counter()
        try:
            raw = client.chat.completions.with_raw_response.create(**scenario.request(text))
            completion = raw.parse()
            content = completion.choices[0].message.content or "{}"
            result = ReplayResult(
                index=index,
                gold=gold,
                label=json.loads(content).get(scenario.field),
                answered_by=raw.headers.get("x-understudy-answered-by"),
                latency_ms=(time.perf_counter() - started) * 1000,
                request_id=raw.headers.get("x-understudy-request-id"),
            )
        except (openai.OpenAIError, ValueError) as error:
            result = ReplayResult(
                index, gold, None, None, (time.perf_counter() - started) * 1000, None, str(error)
            )
        with lock:
            results[index] = result
        if on_result is not None:
            on_result(result)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay") as pool:
        list(pool.map(one, range(len(stream))))
    client.close()
    return [r for r in results if r is not None]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]
