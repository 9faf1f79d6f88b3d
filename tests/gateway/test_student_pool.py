"""The gateway's pool of task states and serving students. Only a task's first call reads the
store; later calls get the cached state while one background read refreshes it, and a failing
read keeps the last known state. Each task version has its own student; a new one swaps in
while the old one answers, without anyone waiting out the old one's grace; a failed load is
retried; the students of answering tasks load at start-up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from understudy.errors import ModelError
from understudy.gateway import create_app, students
from understudy.gateway.students import StudentPool
from understudy.routing.modes import Mode
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import open_store
from understudy.tasks import Task, detect_task
from understudy.testing.tiny_models import write_tiny_student
from worker_support import REQUEST, register_changed_review_task, register_review_task


async def _eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _pool_and_task(tmp_path: Path) -> tuple[StudentPool, Task]:
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings)
    spec = detect_task(REQUEST)
    assert spec is not None
    task = store.register_task(spec)
    pool = StudentPool(
        store, ModelRegistry(settings.models_dir), refresh_s=0.0, max_batch=8, max_wait_ms=1.0
    )
    return pool, task


async def test_a_stale_state_is_answered_from_the_cache_and_refreshed_behind(
    tmp_path: Path,
) -> None:
    pool, task = _pool_and_task(tmp_path)
    assert (await pool.state(task)).mode is Mode.SHADOW
    pool.store.set_mode(task.key, Mode.TEACHER, reason="test")

    assert (await pool.state(task)).mode is Mode.SHADOW  # cached; a refresh starts

    async def refreshed() -> bool:
        return (await pool.state(task)).mode is Mode.TEACHER

    await _eventually(refreshed)
    pool.store.close()


async def test_forgetting_a_state_reads_it_again_at_once(tmp_path: Path) -> None:
    pool, task = _pool_and_task(tmp_path)
    await pool.state(task)
    pool.store.set_mode(task.key, Mode.TEACHER, reason="test")
    pool.forget_state(task.key, task.version)
    assert (await pool.state(task)).mode is Mode.TEACHER
    pool.store.close()


async def test_a_failing_refresh_keeps_the_last_known_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool, task = _pool_and_task(tmp_path)
    await pool.state(task)

    def database_down(*args: object) -> None:
        raise ConnectionError("database down")

    monkeypatch.setattr(pool.store, "task_state", database_down)

    async def failed() -> bool:
        return "could not re-read its state" in caplog.text

    with caplog.at_level(logging.ERROR):
        assert (await pool.state(task)).mode is Mode.SHADOW
        await _eventually(failed)
        assert (await pool.state(task)).mode is Mode.SHADOW
    await pool.close()
    pool.store.close()


async def test_each_task_version_is_answered_by_its_own_student(tmp_path: Path) -> None:
    # Clients on the old schema and on the new one call at once (a rolling deploy): each task
    # version keeps its own serving student, whose heads match that version's schema.
    pool, task = _pool_and_task(tmp_path)
    new_task = register_changed_review_task(pool.store)
    registry = pool.registry
    serving = {}
    for each in (task, new_task):
        staging = write_tiny_student(registry.staging_dir(each.key), each.heads, task=each.key)
        serving[each.version] = registry.publish(staging, each.key)
        pool.store.update_task_state(
            each.key, serving_version=serving[each.version], version=each.version
        )

    for _ in range(2):
        for each in (task, new_task):
            loaded = await pool.wait_loaded(await pool.state(each))
            assert loaded is not None and loaded.version == serving[each.version]
    for each in (task, new_task):
        current = await pool.current(await pool.state(each))
        assert current is not None and current.version == serving[each.version]
        assert current.student.heads == each.heads
    await pool.close()
    pool.store.close()


async def test_a_new_version_swaps_in_without_anyone_waiting_for_the_old_one_to_retire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replaced student stays open for requests already inside it; no call waits for that.
    monkeypatch.setattr(students, "RETIRE_GRACE_S", 3600.0)
    pool, task = _pool_and_task(tmp_path)

    async def publish(seed: int) -> str:
        staging = pool.registry.staging_dir(task.key)
        version = pool.registry.publish(
            write_tiny_student(staging, task.heads, task=task.key, seed=seed), task.key
        )
        pool.store.update_task_state(task.key, serving_version=version)
        pool.forget_state(task.key, task.version)
        return version

    first = await publish(0)
    loaded = await pool.wait_loaded(await pool.state(task))
    assert loaded is not None and loaded.version == first
    second = await publish(1)
    # The first keeps answering while the second loads; then the second serves.
    answering = await asyncio.wait_for(pool.wait_loaded(await pool.state(task)), 30)
    assert answering is not None and answering.version in (first, second)

    async def swapped() -> bool:
        current = await pool.current(await pool.state(task))
        return current is not None and current.version == second

    await _eventually(swapped)
    # Closing the pool closes the retired student at once, not after its grace.
    await asyncio.wait_for(pool.close(), 30)
    with pytest.raises(ModelError, match="closed"):
        await loaded.batcher.predict("the retired student is closed with the pool")
    pool.store.close()


async def test_a_student_that_failed_to_load_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(students, "LOAD_RETRY_S", 0.2)
    pool, task = _pool_and_task(tmp_path)
    staging = write_tiny_student(pool.registry.staging_dir(task.key), task.heads, task=task.key)
    version = pool.registry.publish(staging, task.key)
    pool.store.update_task_state(task.key, serving_version=version)
    # The registry is briefly unreadable (a shared file system): the load fails.
    student_file = pool.registry.path(task.key, version) / "student.json"
    saved = student_file.read_bytes()
    student_file.unlink()
    with caplog.at_level(logging.ERROR):
        assert await pool.wait_loaded(await pool.state(task)) is None
    assert "could not load student v1" in caplog.text

    student_file.write_bytes(saved)

    async def loaded() -> bool:
        current = await pool.current(await pool.state(task))
        return current is not None and current.version == version

    await _eventually(loaded)
    await pool.close()
    pool.store.close()


def test_classify_says_when_the_serving_student_could_not_be_loaded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings)
    task = register_review_task(store)
    registry = ModelRegistry(settings.models_dir)
    staging = write_tiny_student(registry.staging_dir(task.key), task.heads, task=task.key)
    version = registry.publish(staging, task.key)
    store.update_task_state(task.key, serving_version=version)
    (registry.path(task.key, version) / "student.json").unlink()
    with TestClient(create_app(settings, store)) as http:
        response = http.post("/v1/classify", json={"task": "review", "text": "a fine film"})
    error = response.json()["error"]
    assert response.status_code == 500 and error["code"] == "model_error"
    assert "student v1 could not be loaded" in error["message"]
    store.close()


def test_the_students_of_answering_tasks_load_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, audit_rate=0.0)
    store = open_store(settings)
    task = register_review_task(store)
    registry = ModelRegistry(settings.models_dir)
    staging = write_tiny_student(registry.staging_dir(task.key), task.heads, task=task.key)
    store.update_task_state(task.key, serving_version=registry.publish(staging, task.key))
    store.set_mode(task.key, Mode.STUDENT, "test: the student answers everything")
    request = {
        **REQUEST,
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "Classify this review: a fine film"}],
    }
    caplog.set_level(logging.INFO, logger="understudy.gateway.students")
    with TestClient(create_app(settings, store)) as http:
        deadline = time.monotonic() + 30
        while "now serving student v1" not in caplog.text:
            assert time.monotonic() < deadline, "the student was not loaded at start-up"
            time.sleep(0.02)
        # So the very first call is the student's, not the teacher's (there is none here).
        first = http.post("/v1/chat/completions", json=request)
    assert first.status_code == 200, first.text
    assert first.headers["x-understudy-answered-by"] == "student"
    store.close()
