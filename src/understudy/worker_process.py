"""The worker as a child process of ``understudy serve``, started again when it dies.

Without a worker nothing trains, and nothing rolls a drifting student back: a worker that crashed
or was killed by the kernel's out-of-memory killer (fine-tuning is the biggest job on a small
machine) must not leave the gateway running without one. ``WorkerSupervisor`` starts
``understudy worker`` and, when it exits on its own, logs why and starts another after a pause
that doubles from ``RESTART_DELAY_S`` up to ``MAX_RESTART_DELAY_S`` while restarts keep failing.
The child stops with its parent (``stop_with_parent``): a ``serve`` that is killed runs no
clean-up, and its worker would go on training for a gateway that is gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from understudy.settings import Settings

logger = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 60.0
# A worker that ran this long before exiting was healthy: the next restart waits the least again.
HEALTHY_RUN_S = 60.0
# Seconds a stopping worker gets to mark its run interrupted before it is killed.
STOP_TIMEOUT_S = 30.0
# prctl(2) option: the signal the kernel sends a process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def stop_with_parent(parent: int) -> None:
    """Have Linux send this process SIGTERM when the thread that started it ends (its parent's,
    for ``WorkerSupervisor``, which waits on it), and exit now if ``parent`` is already gone.
    Does nothing on other systems."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request was in place
        sys.exit(1)


class WorkerSupervisor:
    """Keeps one ``understudy worker`` child process running until ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.env = {**os.environ, **settings.to_env()}
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards ``process`` against a ``stop`` mid-start
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor")

    def start(self) -> None:
        """Start the worker and the thread that waits on it (and starts the next)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``) and start no other."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        if self._thread.is_alive():
            self._thread.join()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            command = [sys.executable, "-m", "understudy", "worker"]
            self.process = subprocess.Popen(
                [*command, "--stop-with", str(os.getpid())], env=self.env
            )
            return self.process

    def _supervise(self) -> None:
        delay = RESTART_DELAY_S
        while True:
            try:
                process = self._spawn()
            except OSError:  # no memory to fork, no such interpreter any more...
                logger.exception("could not start the worker; trying again in %.0f s", delay)
            else:
                if process is None:
                    return
                started = time.monotonic()
                code = process.wait()
                if self._stopping.is_set():
                    return
                if time.monotonic() - started >= HEALTHY_RUN_S:
                    delay = RESTART_DELAY_S
                logger.error(
                    "worker process %d exited with code %d; starting another in %.0f s",
                    process.pid,
                    code,
                    delay,
                )
            if self._stopping.wait(delay):
                return
            delay = min(2 * delay, MAX_RESTART_DELAY_S)
