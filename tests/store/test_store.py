"""The store through its public API, on real SQLite files in a temp dir."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from understudy.errors import InvalidRequest, UnknownRequest, UnknownTask
from understudy.routing.modes import Mode
from understudy.settings import Settings
from understudy.store import CallKind, CallRecord, Store, is_heldout, migrate, open_store
from understudy.store import tables as t
from understudy.tasks import LabelSource, Task, TaskSpec, detect_task

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["negative", "positive"]},
        "sarcastic": {"type": "boolean"},
    },
    "required": ["sentiment", "sarcastic"],
}


def _spec(schema: dict[str, Any] = SCHEMA, name: str = "sentiment") -> TaskSpec:
    request = {
        "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    }
    spec = detect_task(request)
    assert spec is not None
    return spec


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", template_min_calls=3)


@pytest.fixture()
def store(settings: Settings) -> Store:
    return open_store(settings)


def _teacher_call(task: Task, call_id: str, text: str, labels: dict[str, str]) -> CallRecord:
    return CallRecord(
        id=call_id,
        kind=CallKind.CLASSIFICATION,
        request={"messages": [{"role": "user", "content": text}]},
        response={"choices": []},
        status_code=200,
        task=task,
        user_text=text,
        input_text=text,
        labels=labels,
        label_source=LabelSource.TEACHER,
        answered_by="teacher",
        teacher_model="fake-teacher",
        latency_ms=1.5,
        prompt_tokens=10,
        completion_tokens=3,
    )


def test_open_store_uses_wal_and_is_idempotent(settings: Settings, store: Store) -> None:
    assert (settings.data_dir / "understudy.db").exists()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    again = open_store(settings)  # migrating a current database is a no-op
    assert again.list_tasks() == []


def test_tables_mirror_the_migrations(store: Store) -> None:
    inspector = sa.inspect(store.engine)
    for table in t.metadata.sorted_tables:
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == set(table.columns.keys()), table.name


def test_register_task_versions_on_schema_change(store: Store) -> None:
    first = store.register_task(_spec())
    assert (first.key, first.version) == ("sentiment", 1)
    assert store.register_task(_spec()).version == 1
    changed = {**SCHEMA, "properties": {**SCHEMA["properties"], "topic": {"enum": ["a", "b"]}}}
    second = store.register_task(_spec(changed))
    assert second.version == 2
    assert [h.name for h in second.heads] == ["sentiment", "sarcastic", "topic"]
    assert store.get_task("sentiment").version == 2
    assert store.get_task("sentiment", 1).heads == first.heads
    # A fresh Store (e.g. after a restart) finds the same versions in the database.
    fresh = Store(store.engine)
    assert fresh.register_task(_spec()).version == 1
    with pytest.raises(UnknownTask):
        store.get_task("nope")
    assert [(r.task.key, r.task.version) for r in store.list_tasks()] == [
        ("sentiment", 2),
        ("sentiment", 1),
    ]


def test_record_call_and_labels_round_trip(store: Store) -> None:
    task = store.register_task(_spec())
    store.record_call(
        _teacher_call(task, "c1", "good", {"sentiment": "positive", "sarcastic": "false"})
    )
    row = store.get_call("c1")
    assert row.task_key == "sentiment" and row.task_version == 1
    assert row.labels == {"sentiment": "positive", "sarcastic": "false"}
    assert row.latency_ms == 1.5 and row.prompt_tokens == 10
    assert row.heldout == is_heldout("c1", 0.2)
    with pytest.raises(UnknownRequest):
        store.get_call("missing")

    stored = store.add_labels("c1", {"sentiment": "negative", "sarcastic": True}, author="ana")
    assert stored == {"sentiment": "negative", "sarcastic": "true"}
    [example] = store.examples("sentiment")
    assert example.labels == {"sentiment": "negative", "sarcastic": "true"}
    assert example.source is LabelSource.HUMAN
    assert example.call_id == "c1"
    assert store.count_labelled("sentiment") == 1


@pytest.mark.parametrize(
    ("labels", "param"),
    [
        ({"colour": "red"}, "labels.colour"),
        ({"sentiment": "meh"}, "labels.sentiment"),
        ({"sarcastic": "maybe"}, "labels.sarcastic"),
        ({}, "labels"),
    ],
)
def test_add_labels_rejects_values_outside_the_schema(
    store: Store, labels: dict[str, Any], param: str
) -> None:
    task = store.register_task(_spec())
    store.record_call(_teacher_call(task, "c1", "x", {"sentiment": "positive"}))
    with pytest.raises(InvalidRequest) as info:
        store.add_labels("c1", labels)
    assert info.value.param == param


def test_add_labels_rejects_passthrough_calls(store: Store) -> None:
    store.record_call(
        CallRecord(id="p1", kind=CallKind.PASSTHROUGH, request={}, response={}, status_code=200)
    )
    with pytest.raises(InvalidRequest, match="not a classification call"):
        store.add_labels("p1", {"sentiment": "positive"})


def test_template_is_learned_and_stripped_in_examples(store: Store) -> None:
    task = store.register_task(_spec())
    reviews = ["Loved it.", "Dull and long.", "A quiet triumph."]
    for i, review in enumerate(reviews):
        text = f"Classify this review:\n{review}\nAnswer in JSON."
        store.record_call(_teacher_call(task, f"c{i}", text, {"sentiment": "positive"}))
    assert store.template(task) == ("Classify this review:\n", "\nAnswer in JSON.")
    assert [e.text for e in store.examples("sentiment")] == reviews
    assert [e.kind for e in store.events("sentiment")][:1] == ["template_learned"]


def test_heldout_split_filters_examples(store: Store) -> None:
    task = store.register_task(_spec())
    ids = [f"call-{i}" for i in range(60)]
    for call_id in ids:
        store.record_call(_teacher_call(task, call_id, call_id, {"sentiment": "negative"}))
    held = {e.call_id for e in store.examples("sentiment", heldout=True)}
    train = {e.call_id for e in store.examples("sentiment", heldout=False)}
    assert held == {i for i in ids if is_heldout(i, 0.2)}
    assert held.isdisjoint(train) and held | train == set(ids)
    assert 0 < len(held) < 30
    assert store.count_labelled("sentiment", heldout=True) == len(held)


def test_mode_changes_are_events(store: Store) -> None:
    store.register_task(_spec())
    assert store.task_state("sentiment").mode is Mode.SHADOW
    state = store.set_mode("sentiment", Mode.CASCADE, "good enough", {"coverage": 0.4})
    assert state.mode is Mode.CASCADE
    state = store.update_task_state("sentiment", threshold=0.9, serving_version="3")
    assert (state.threshold, state.serving_version, state.audit_rate) == (0.9, "3", None)
    events = store.events("sentiment")
    assert [e.kind for e in events] == ["state", "mode", "task_registered"]
    assert (events[1].from_mode, events[1].to_mode, events[1].evidence) == (
        "shadow",
        "cascade",
        {"coverage": 0.4},
    )


def test_student_runs_round_trip(store: Store) -> None:
    task = store.register_task(_spec())
    run_id = store.start_student_run(task, "ngram")
    store.finish_student_run(run_id, "succeeded", version="1", metrics={"accuracy": 0.9})
    [run] = store.student_runs("sentiment")
    assert (run.kind, run.status, run.version, run.metrics) == (
        "ngram",
        "succeeded",
        "1",
        {"accuracy": 0.9},
    )
    assert run.finished_at is not None and run.started_at is not None


def test_a_run_ends_once(store: Store) -> None:
    # A worker stopping just after a background run was promoted must not relabel it.
    run_id = store.start_student_run(store.register_task(_spec()), "probe")
    assert store.finish_student_run(run_id, "promoted", version="v1")
    assert not store.finish_student_run(run_id, "interrupted")
    [run] = store.student_runs("sentiment")
    assert (run.status, run.version) == ("promoted", "v1")


def test_migrate_twice_keeps_data(store: Store) -> None:
    store.register_task(_spec())
    migrate(store.engine)
    assert store.get_task("sentiment").version == 1


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    # The gateway and the worker open a fresh database at the same moment.
    settings = Settings(data_dir=tmp_path / "fresh")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_once() -> None:
        barrier.wait()
        try:
            open_store(settings).list_tasks()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
