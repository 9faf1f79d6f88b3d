"""One worker per database: a second worker on the same SQLite file stands by, leaves the first
one's training runs alone, and takes over when the lock is free; a worker whose run was taken
over does not publish (the PostgreSQL lock is tested in tests/store/test_postgres.py)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from understudy import worker as worker_module
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store, open_store, switch
from understudy.store.engine import create_engine
from understudy.store.worker_lock import WorkerLock
from understudy.tasks import Task
from understudy.worker import Worker
from worker_support import log_teacher_calls, register_review_task

DEADLINE_S = 30.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", first_train_labels=100, student_kinds=["ngram"],
        worker_poll_s=0.05,
    )  # fmt: skip


@pytest.fixture()
def store(settings: Settings) -> Store:
    return open_store(settings)


@pytest.fixture()
def task(store: Store) -> Task:
    return register_review_task(store)


def statuses(store: Store) -> list[str]:
    return [run.status for run in store.student_runs("review")]


def test_a_sqlite_database_has_one_worker_lock(store: Store) -> None:
    first, second = WorkerLock(store.engine), WorkerLock(store.engine)
    assert first.acquire() and first.held
    assert first.acquire()  # taking it again while held is a no-op
    assert not second.acquire() and not second.held
    assert f"worker process {os.getpid()}" in second.holder()
    first.release()
    assert second.acquire()
    second.release()


def test_an_in_memory_database_is_never_shared() -> None:
    engine = create_engine("sqlite:///:memory:")
    assert WorkerLock(engine).acquire() and WorkerLock(engine).acquire()


def test_a_second_worker_stands_by_until_the_first_lets_go(
    settings: Settings, store: Store, task: Task, caplog: pytest.LogCaptureFixture
) -> None:
    log_teacher_calls(store, task, 300, seed=1)
    # The first worker holds the lock and is training a student.
    first = WorkerLock(store.engine)
    assert first.acquire()
    store.start_student_run(task, "ngram")

    second, stop = Worker(settings, store), threading.Event()
    caplog.set_level(logging.INFO, logger="understudy.worker")
    thread = threading.Thread(target=second.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: "standing by" in caplog.text, "the second worker to stand by")
        time.sleep(5 * settings.worker_poll_s)  # passes it would have made, had it acted
        # It neither marked the first worker's run interrupted nor trained a student itself.
        assert statuses(store) == ["running"]
        assert caplog.text.count("standing by") == 1

        # The first worker goes away: the second takes over, cleans up after it, and trains.
        first.release()
        wait_for(lambda: "promoted" in statuses(store), "the second worker to train")
        assert sorted(statuses(store)) == ["interrupted", "promoted"]
        assert "took over this database's worker lock" in caplog.text
    finally:
        stop.set()
        thread.join(DEADLINE_S)
    # It let the lock go when it stopped.
    assert first.acquire()
    first.release()


def test_a_worker_whose_run_another_worker_took_over_does_not_publish(
    settings: Settings,
    store: Store,
    task: Task,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log_teacher_calls(store, task, 300, seed=1)
    train_student = worker_module.train_student

    def train_while_another_worker_takes_over(*args: object, **kwargs: object) -> None:
        train_student(*args, **kwargs)  # type: ignore[arg-type]
        # Meanwhile this worker's PostgreSQL connection dropped with its lock, and another worker
        # took the lock and cleaned up (``Worker.recover``): this worker's run is interrupted.
        switch.interrupt_running_runs(store)

    monkeypatch.setattr(worker_module, "train_student", train_while_another_worker_takes_over)
    caplog.set_level(logging.WARNING, logger="understudy.worker")
    actions = Worker(settings, store).run_once()

    assert [action.what for action in actions] == ["discarded"]
    assert statuses(store) == ["interrupted"]
    assert store.task_state(task.key, task.version).serving_version is None
    assert ModelRegistry(settings.models_dir).versions(task.key) == []
    assert "closed by another worker while it trained" in caplog.text
