"""A background lane: one thread that runs one slow job at a time and keeps its outcome.

The worker trains encoder students (minutes on a laptop CPU) in this lane so that its loop keeps
retraining cheap students, evaluating and applying the switch policy meanwhile. A thread, not a
process, is enough: PyTorch and ONNX Runtime release the GIL in their kernels. Jobs cannot be
cancelled; the lane's thread is a daemon so that a stopping worker process does not wait for one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TrainingLane(Generic[T]):
    """Runs ``job() -> T`` on a background thread, one job at a time.

    ``start`` refuses a job while another runs; ``outcomes`` hands over (once) what finished
    jobs returned. A job that raises is logged and leaves no outcome: jobs report their own
    failures.
    """

    def __init__(self, name: str = "training-lane") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._outcomes: list[T] = []

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def start(self, job: Callable[[], T]) -> None:
        """Run ``job`` in the background. Raises RuntimeError while another job runs (check
        ``busy`` first)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError(f"the {self.name} runs one job at a time")
            self._thread = threading.Thread(
                target=self._run, args=(job,), name=self.name, daemon=True
            )
            self._thread.start()

    def _run(self, job: Callable[[], T]) -> None:
        try:
            outcome = job()
        except Exception:
            logger.exception("a job in the %s failed", self.name)
            return
        with self._lock:
            self._outcomes.append(outcome)

    def outcomes(self) -> list[T]:
        """What the jobs finished since the last call returned, oldest first."""
        with self._lock:
            done, self._outcomes = self._outcomes, []
        return done

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the running job; True when none runs any more."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()
