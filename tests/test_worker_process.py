"""``understudy worker`` as its own process: it yields the CPU to the gateway's students, and
``--once`` does nothing while another worker holds the database's worker lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from understudy.settings import Settings
from understudy.store import open_store
from understudy.store.worker_lock import WorkerLock
from understudy.tasks import detect_task
from worker_support import REQUEST


@pytest.mark.skipif(not hasattr(os, "nice"), reason="niceness is POSIX")
def test_the_worker_lowers_its_own_priority(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "UNDERSTUDY_DATA_DIR": str(tmp_path),
        "UNDERSTUDY_WORKER_NICE": "7",
        "UNDERSTUDY_LOG_LEVEL": "info",
    }
    done = subprocess.run(
        [sys.executable, "-m", "understudy", "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected = min(19, os.nice(0) + 7)
    assert f"niceness {expected}" in done.stderr


def test_worker_once_refuses_while_another_worker_holds_the_lock(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path))
    spec = detect_task(REQUEST)
    assert spec is not None
    store.start_student_run(store.register_task(spec), "ngram")  # the running worker's run
    running = WorkerLock(store.engine)
    assert running.acquire()
    env = {**os.environ, "UNDERSTUDY_DATA_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "understudy", "worker", "--once"]

    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stderr
    assert f"worker process {os.getpid()}" in refused.stdout
    assert "holds this database's worker lock" in refused.stdout
    assert [run.status for run in store.student_runs("review")] == ["running"]

    running.release()
    subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    # Now it acts, cleaning up after the worker that had the lock.
    assert [run.status for run in store.student_runs("review")] == ["interrupted"]
