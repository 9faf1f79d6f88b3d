"""The write-behind call log: journaled calls reach the database, readers see them at once,
a killed process's journal is replayed, and a call the database rejects is kept, not lost."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from understudy.errors import UnknownTask
from understudy.settings import Settings
from understudy.store import CallKind, CallRecord, Store, open_store
from understudy.store.call_log import REJECTED_FILE, CallLog
from understudy.tasks import LabelSource, Task, TaskSpec, detect_task

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["sentiment"],
}


def _spec() -> TaskSpec:
    spec = detect_task(
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}}
    )
    assert spec is not None
    return spec


def _call(task: Task, call_id: str, text: str = "a good film é ✓") -> CallRecord:
    return CallRecord(
        id=call_id,
        kind=CallKind.CLASSIFICATION,
        request={"messages": [{"role": "user", "content": text}]},
        response={"choices": [], "model": "teacher"},
        status_code=200,
        task=task,
        user_text=text,
        input_text=text,
        labels={"sentiment": "positive"},
        label_source=LabelSource.TEACHER,
        answered_by="teacher",
        teacher_model="teacher",
        latency_ms=2.5,
    )


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture()
def store(settings: Settings) -> Store:
    return open_store(settings)


@pytest.fixture()
def task(store: Store) -> Task:
    return store.register_task(_spec())


@pytest.fixture()
def call_log(store: Store, settings: Settings) -> Iterator[CallLog]:
    log = CallLog(store, settings.journal_dir)
    yield log
    log.close()


def test_submitted_calls_are_visible_to_any_reader_in_the_process(
    call_log: CallLog, task: Task, settings: Settings
) -> None:
    other = open_store(settings)  # a second engine on the same database
    for i in range(20):
        call_log.submit(_call(task, f"c{i}"))
        row = other.get_call(f"c{i}")  # no wait, no poll: the read waits for the write
        assert row.labels == {"sentiment": "positive"}
        assert row.user_text == "a good film é ✓"
        assert row.created_at is not None


def test_close_commits_everything_and_removes_the_journal(
    store: Store, task: Task, settings: Settings
) -> None:
    log = CallLog(store, settings.journal_dir)
    for i in range(300):
        log.submit(_call(task, f"c{i}"))
    log.close()
    assert not list(settings.journal_dir.glob("calls-*.jsonl"))
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM calls")).scalar_one() == 300
        assert conn.execute(sa.text("SELECT count(*) FROM labels")).scalar_one() == 300


def test_a_killed_process_journal_is_replayed_at_the_next_start(
    store: Store, task: Task, settings: Settings
) -> None:
    # A child journals 200 calls and is killed (os._exit: no shutdown runs) straight away, so
    # some or all of its calls never reached the database.
    child = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from understudy.settings import Settings
        from understudy.store import CallKind, CallRecord, open_store
        from understudy.store.call_log import CallLog
        settings = Settings(data_dir=Path({str(settings.data_dir)!r}))
        store = open_store(settings)
        task = store.get_task("s")
        log = CallLog(store, settings.journal_dir)
        for i in range(200):
            log.submit(CallRecord(id=f"k{{i}}", kind=CallKind.CLASSIFICATION, request=None,
                                  response=None, status_code=200, task=task, user_text="t"))
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", child], check=True)
    CallLog(store, settings.journal_dir).close()  # a new start replays the orphaned journal
    for i in range(200):
        assert store.get_call(f"k{i}").status_code == 200
    assert not list(settings.journal_dir.glob("calls-*.jsonl"))


def test_a_call_the_database_rejects_is_kept_with_the_reason(
    call_log: CallLog, store: Store, task: Task, settings: Settings
) -> None:
    unknown = Task(key="never-registered", version=1, schema=SCHEMA, heads=task.heads)
    call_log.submit(_call(task, "good-1"))
    call_log.submit(_call(unknown, "orphan"))
    call_log.submit(_call(task, "good-2"))
    assert call_log.flush()
    assert store.get_call("good-1") and store.get_call("good-2")
    kept = [json.loads(line) for line in (settings.journal_dir / REJECTED_FILE).open()]
    assert len(kept) == 1
    assert json.loads(kept[0]["journal_line"])["id"] == "orphan"
    assert "never-registered" in kept[0]["error"]


def test_a_failing_database_is_retried_until_it_recovers(
    call_log: CallLog, store: Store, task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = 3
    real = store.record_calls

    def flaky(records: list[CallRecord], skip_logged: bool = False) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        assert skip_logged  # a retried batch may have landed before the failure was seen
        return real(records, skip_logged=skip_logged)

    monkeypatch.setattr(store, "record_calls", flaky)
    call_log.submit(_call(task, "retried"))
    assert call_log.flush(timeout_s=30)
    assert failures == 0
    assert store.get_call("retried").status_code == 200


def test_replaying_a_journal_line_of_a_deleted_task_keeps_it(
    store: Store, task: Task, settings: Settings
) -> None:
    settings.journal_dir.mkdir(parents=True)
    line = json.dumps({"id": "x", "task": ["gone", 3], "kind": "classification"})
    (settings.journal_dir / "calls-1-dead.jsonl").write_text(line + "\n{torn")
    CallLog(store, settings.journal_dir).close()
    kept = [json.loads(line) for line in (settings.journal_dir / REJECTED_FILE).open()]
    assert [json.loads(entry["journal_line"]).get("id") for entry in kept[:1]] == ["x"]
    assert kept[1]["journal_line"] == "{torn"
    with pytest.raises(UnknownTask):
        store.get_task("gone")
