"""Micro-batching: concurrent single-text requests grouped into one ``Student.predict`` call.

Under load, requests that arrive while a batch runs form the next batch, so throughput follows
the model's batch throughput; alone, a request waits at most ``max_wait_ms`` for company.
Inference runs on a dedicated worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from understudy.errors import ConfigurationError, ModelError
from understudy.serving.student import Student
from understudy.tasks import Prediction

log = logging.getLogger(__name__)


# Batch sizes remembered by ``BatchStats``: the recent ones, so a long-running gateway's memory
# stays flat.
RECENT_BATCHES = 1000


@dataclass
class BatchStats:
    """Counters of a batcher: batches run, requests answered, recent batch sizes."""

    batches: int = 0
    requests: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_BATCHES))


@dataclass
class _Request:
    text: str
    future: asyncio.Future[Prediction]
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Groups concurrent ``predict(text)`` calls into ``student.predict`` batches.

    ``max_batch``: most texts per call. ``max_wait_ms``: longest a request waits for others to
    join before its batch starts (0 = start with whatever is queued). A batcher belongs to the
    event loop of its first ``predict`` call.
    """

    def __init__(self, student: Student, max_batch: int = 32, max_wait_ms: float = 2.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ConfigurationError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.student = student
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="understudy-batch")
        self._closed = False

    async def predict(self, text: str) -> Prediction:
        """The student's prediction for ``text``, computed in a batch with concurrent callers."""
        if self._closed:
            raise ModelError("the batcher is closed")
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(self._queue), name="understudy-batcher")
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.put_nowait(_Request(text, future))
        return await future

    async def _collect(self, queue: asyncio.Queue[_Request]) -> list[_Request]:
        """The next batch: the oldest waiting request plus those queued or arriving until it has
        waited max_wait (a backlog built up during the previous batch starts at once)."""
        batch = [await queue.get()]
        deadline = batch[0].enqueued + self.max_wait_s
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return [r for r in batch if not r.future.done()]  # drop requests cancelled while queued

    async def _run(self, queue: asyncio.Queue[_Request]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            if not batch:
                continue
            texts = [r.text for r in batch]
            try:
                predictions = await loop.run_in_executor(
                    self._executor, self.student.predict, texts
                )
                if len(predictions) != len(batch):
                    raise ModelError(
                        f"student returned {len(predictions)} predictions for {len(batch)} texts"
                    )
            except Exception as exc:  # every waiting caller gets the failure, then we go on
                log.exception(
                    "student %s %s failed on a batch", self.student.task_key, self.student.version
                )
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.sizes.append(len(batch))
            for request, prediction in zip(batch, predictions, strict=True):
                if not request.future.done():
                    request.future.set_result(prediction)

    async def close(self) -> None:
        """Stop the worker, fail requests still queued, and release the inference thread."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._queue is not None:
            while not self._queue.empty():
                request = self._queue.get_nowait()
                if not request.future.done():
                    request.future.set_exception(ModelError("the batcher was closed"))
        self._executor.shutdown(wait=False)
