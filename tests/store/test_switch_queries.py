"""The switch loop's store queries: audits, live agreement, rollbacks, interrupted runs."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from understudy.processes import ProcessRef
from understudy.routing.modes import Mode
from understudy.settings import Settings
from understudy.store import CallRecord, Store, open_store, switch
from understudy.tasks import LabelSource, Task, detect_task
from worker_support import student_answer

REQUEST = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "sentiment",
            "schema": {
                "type": "object",
                "properties": {"sentiment": {"type": "string", "enum": ["neg", "pos"]}},
                "required": ["sentiment"],
            },
        },
    }
}


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return open_store(Settings(data_dir=tmp_path))


@pytest.fixture()
def task(store: Store) -> Task:
    spec = detect_task(REQUEST)
    assert spec is not None
    return store.register_task(spec)


def student_call(task: Task, call_id: str, label: str, version: str = "v1") -> CallRecord:
    return student_answer(
        task, call_id, label, version=version, text=f"text {call_id}", request=REQUEST
    )


def test_audits_attach_teacher_labels_and_count_as_live_agreement(store: Store, task: Task) -> None:
    for i, (student, teacher) in enumerate([("pos", "pos"), ("neg", "pos"), ("neg", "neg")]):
        store.record_call(student_call(task, f"c{i}", student))
        switch.record_audit(store, f"c{i}", {"sentiment": teacher}, teacher_model="fake")
    store.record_call(student_call(task, "unaudited", "pos"))

    counts = switch.live_agreement(
        store, "sentiment", 1, student_version="v1", answered_by_student=True, since=None, window=10
    )
    assert counts == (3, 2)
    # The audit's teacher label is a training label that beats nothing but is now stored.
    examples = {e.call_id: e for e in store.examples("sentiment")}
    assert examples["c1"].labels == {"sentiment": "pos"}
    assert examples["c1"].source is LabelSource.TEACHER
    assert "unaudited" not in examples
    assert store.get_call("c1").student_labels == {"sentiment": "neg"}
    assert store.get_call("c1").agreed is False


def test_live_agreement_keeps_to_the_window_version_and_time(store: Store, task: Task) -> None:
    for i in range(5):
        store.record_call(student_call(task, f"old{i}", "pos", version="v1"))
        switch.record_audit(store, f"old{i}", {"sentiment": "neg"}, teacher_model="fake")
    since = switch.last_mode_change(store, "sentiment", 1)
    assert since is None
    store.set_mode("sentiment", Mode.CASCADE, "test")
    since = switch.last_mode_change(store, "sentiment", 1)
    for i in range(4):
        store.record_call(student_call(task, f"new{i}", "pos", version="v2"))
        switch.record_audit(store, f"new{i}", {"sentiment": "pos"}, teacher_model="fake")

    def live(version: str, since_: object, window: int) -> tuple[int, int]:
        return switch.live_agreement(
            store,
            "sentiment",
            1,
            student_version=version,
            answered_by_student=True,
            since=since_,  # type: ignore[arg-type]
            window=window,
        )

    assert live("v1", None, 100) == (5, 0)
    assert live("v2", since, 100) == (4, 4)
    assert live("v1", since, 100) == (0, 0)
    assert live("v2", None, 2) == (2, 2)


def test_rolled_back_versions_come_from_mode_events(store: Store, task: Task) -> None:
    store.set_mode("sentiment", Mode.CASCADE, "promoted", {"heldout": {"version": "v1"}})
    assert switch.rolled_back_versions(store, "sentiment", 1) == set()
    store.set_mode("sentiment", Mode.SHADOW, "drift", {"heldout": {"version": "v1"}})
    assert switch.rolled_back_versions(store, "sentiment", 1) == {"v1"}


def test_runs_left_running_are_marked_interrupted(store: Store, task: Task) -> None:
    running = store.start_student_run(task, "ngram", train_size=40)
    done = store.start_student_run(task, "ngram")
    store.finish_student_run(done, "promoted", version="v1", metrics={"train_size": 10})
    assert switch.interrupt_running_runs(store) == [(running, "sentiment", "ngram")]
    runs = {run.id: run for run in store.student_runs("sentiment")}
    assert runs[running].status == "interrupted" and runs[done].status == "promoted"
    assert runs[running].metrics == {
        "train_size": 40,
        "abandoned": True,
        "error": switch.ABANDONED_RUN_ERROR,
    }
    assert switch.interrupt_running_runs(store) == []


def test_runs_of_a_live_command_are_left_running(store: Store, task: Task) -> None:
    exited = subprocess.Popen(["true"])
    exited.wait()
    here = socket.gethostname()
    live = store.start_student_run(task, "probe", started_by=ProcessRef.current())
    elsewhere = store.start_student_run(task, "probe", started_by=ProcessRef(1, f"not-{here}"))
    dead = store.start_student_run(task, "probe", started_by=ProcessRef(exited.pid, here))
    workers = store.start_student_run(task, "probe")
    # Each worker pass: only the runs of commands that have exited.
    assert switch.interrupt_running_runs(store, commands_only=True) == [
        (dead, "sentiment", "probe")
    ]
    # A worker taking the lock: the worker's runs too.
    assert switch.interrupt_running_runs(store) == [(workers, "sentiment", "probe")]
    statuses = {run.id: run.status for run in store.student_runs("sentiment")}
    assert statuses == {
        live: "running",
        elsewhere: "running",
        dead: "interrupted",
        workers: "interrupted",
    }
