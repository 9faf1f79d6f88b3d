"""The micro-batcher groups concurrent requests into one student call, off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from understudy.errors import ModelError
from understudy.serving.batcher import MicroBatcher
from understudy.tasks import Head, Prediction

HEAD = Head("echo", ("x",))
DEADLINE_S = 10.0


class RecordingStudent:
    """Answers each text with itself as probability key; the first call blocks until released."""

    task_key, version, kind, heads = "t", "v1", "fake", (HEAD,)

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.threads: list[str] = []
        self.first_call_started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls.append(list(texts))
        self.threads.append(threading.current_thread().name)
        self.first_call_started.set()
        if not self.release.wait(DEADLINE_S):
            raise TimeoutError("test never released the student")
        if self.fail_on in texts:
            raise ModelError("boom")
        return [Prediction(labels={"echo": "x"}, probs={"echo": {t: 1.0}}) for t in texts]


async def _wait_for(event: threading.Event) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not event.is_set():
        assert time.monotonic() < deadline, "timed out waiting for the student"
        await asyncio.sleep(0.001)


async def test_requests_arriving_during_a_batch_form_the_next_batch() -> None:
    student = RecordingStudent()
    batcher = MicroBatcher(student, max_batch=32, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.predict("t0"))
    await _wait_for(student.first_call_started)  # batch 1 is running in the worker thread
    rest = [asyncio.ensure_future(batcher.predict(f"t{i}")) for i in range(1, 11)]
    await asyncio.sleep(0)  # let them enqueue
    student.release.set()
    results = await asyncio.gather(first, *rest)
    assert student.calls == [["t0"], [f"t{i}" for i in range(1, 11)]]
    assert [next(iter(r.probs["echo"])) for r in results] == [f"t{i}" for i in range(11)]
    assert all(name.startswith("understudy-batch") for name in student.threads)
    assert list(batcher.stats.sizes) == [1, 10]
    await batcher.close()


async def test_max_batch_splits_a_burst() -> None:
    student = RecordingStudent()
    student.release.set()
    batcher = MicroBatcher(student, max_batch=4, max_wait_ms=50)
    results = await asyncio.gather(*(batcher.predict(f"t{i}") for i in range(10)))
    assert [next(iter(r.probs["echo"])) for r in results] == [f"t{i}" for i in range(10)]
    assert [len(c) for c in student.calls] == [4, 4, 2]
    await batcher.close()


async def test_a_failing_batch_fails_its_callers_only() -> None:
    student = RecordingStudent(fail_on="bad")
    student.release.set()
    batcher = MicroBatcher(student, max_batch=8, max_wait_ms=20)
    outcomes = await asyncio.gather(
        batcher.predict("bad"), batcher.predict("good"), return_exceptions=True
    )
    assert all(isinstance(o, ModelError) for o in outcomes)
    assert (await batcher.predict("later")).labels == {"echo": "x"}
    await batcher.close()
    with pytest.raises(ModelError, match="closed"):
        await batcher.predict("after close")
