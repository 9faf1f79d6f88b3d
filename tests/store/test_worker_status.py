"""The worker's status as the doctor, the dashboard and /metrics read it: whether a worker holds
the database's lock, which process it is, and whether it is stuck (no pass for too long)."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

from understudy.settings import Settings
from understudy.store import open_store
from understudy.store import tables as t
from understudy.store.worker_status import MIN_STALE_AFTER_S, worker_status
from understudy.worker import Worker


def test_a_worker_is_running_then_stuck_then_gone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings)
    now = t.utcnow()
    idle = worker_status(store, settings.worker_poll_s)
    assert not idle.running and idle.heartbeat is None
    assert "No worker is running" in (idle.problem(now) or "")

    worker = Worker(settings, store)
    assert worker.lead()  # takes the lock: the heartbeat names its process
    worker.run_once()  # and each pass is recorded
    status = worker_status(store, settings.worker_poll_s)
    assert (
        status.running
        and status.holder == f"worker process {os.getpid()} on {socket.gethostname()}"
    )
    assert status.heartbeat is not None and status.heartbeat.last_pass_at is not None
    assert status.problem(t.utcnow()) is None

    # An hour with no pass while holding the lock: stuck.
    later = t.utcnow() + timedelta(hours=1)
    assert status.stale_after_s == MIN_STALE_AFTER_S
    assert (status.stuck_for_s(later) or 0) > 3500
    assert "has finished no pass for 60 min" in (status.problem(later) or "")

    worker.worker_lock.release()
    assert not worker_status(store, settings.worker_poll_s).running
