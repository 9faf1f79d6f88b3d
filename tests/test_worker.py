"""The worker's loop through the library API: train when due, publish only winners, and move a
task between modes by the switch policy (real SQLite, real ngram students)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from understudy.routing import Mode
from understudy.serving import onnx_export
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.tasks import Task, detect_task
from understudy.testing.tiny_models import write_tiny_encoder
from understudy.worker import Worker
from worker_support import (
    UNSEEN_SENTIMENT_WORDS,
    log_audited_student_answer,
    log_teacher_calls,
    register_changed_review_task,
    register_review_task,
)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        heldout_fraction=0.5,
        first_train_labels=100,
        min_heldout_for_switch=150,
        student_kinds=["ngram"],
        min_live_for_rollback=20,
    )


@pytest.fixture()
def store(settings: Settings) -> Store:
    return open_store(settings)


@pytest.fixture()
def task(store: Store) -> Task:
    return register_review_task(store)


def worker_with_a_cascading_student(
    settings: Settings, store: Store, task: Task, seed: int
) -> Worker:
    """A worker that trained, published and promoted a student of 400 teacher calls."""
    log_teacher_calls(store, task, 400, seed=seed)
    worker = Worker(settings, store)
    worker.run_once()
    assert store.task_state("review").mode is Mode.CASCADE
    return worker


def test_nothing_trains_before_enough_labels(settings: Settings, store: Store, task: Task) -> None:
    log_teacher_calls(store, task, 50, seed=1)
    assert Worker(settings, store).run_once() == []
    assert store.student_runs("review") == []


def test_a_good_student_is_published_and_promotes_the_task_to_cascade(
    settings: Settings, store: Store, task: Task
) -> None:
    log_teacher_calls(store, task, 400, seed=2)
    actions = Worker(settings, store).run_once()

    whats = [a.what for a in actions]
    assert whats == ["promoted", "mode shadow -> cascade"]
    state = store.task_state("review")
    assert state.mode is Mode.CASCADE
    assert state.serving_version == "v1"
    assert state.threshold is not None and 0.0 < state.threshold < 1.0
    run = store.student_runs("review")[0]
    assert run.status == "promoted" and run.kind == "ngram"
    assert run.metrics is not None and run.metrics["agreement"] > 0.95
    metrics = json.loads((settings.models_dir / "review" / "v1" / "metrics.json").read_text())
    assert metrics["heldout"]["threshold"] == state.threshold
    event = store.events("review")[0]
    assert event.to_mode == "cascade" and event.evidence is not None
    assert event.evidence["heldout"]["version"] == "v1"

    # Nothing new to learn from: the next pass does nothing.
    assert Worker(settings, store).run_once() == []


def test_a_candidate_that_does_not_beat_the_serving_student_is_not_published(
    settings: Settings, store: Store, task: Task
) -> None:
    log_teacher_calls(store, task, 400, seed=3)
    Worker(settings, store).run_once()
    log_teacher_calls(store, task, 200, seed=4, start=400)  # +50%: retrain is due
    actions = Worker(settings, store).run_once()
    assert [a.what for a in actions][:1] in (["rejected"], ["promoted"])
    versions = [r.version for r in store.student_runs("review") if r.status == "promoted"]
    assert len(versions) == len(set(versions))


def test_a_candidate_that_could_answer_nothing_does_not_replace_an_answering_student(
    settings: Settings, store: Store, task: Task
) -> None:
    worker = worker_with_a_cascading_student(settings, store, task, seed=6)
    # A target no held-out set of this size can confirm: the next candidate has no threshold.
    store.update_task_state("review", target_agreement=0.9999)
    # Reviews in words the serving student never saw: the candidate agrees more than it does on
    # the grown held-out set, so by agreement alone it would be published and drop the task back.
    log_teacher_calls(store, task, 300, seed=7, start=400, words=UNSEEN_SENTIMENT_WORDS)
    actions = worker.run_once()

    assert [a.what for a in actions] == ["rejected"]
    run = store.student_runs("review")[0]
    assert run.metrics is not None and run.metrics["threshold"] is None
    state = store.task_state("review")
    assert state.mode is Mode.CASCADE and state.serving_version == "v1"


def test_live_drift_rolls_the_task_back(settings: Settings, store: Store, task: Task) -> None:
    worker = worker_with_a_cascading_student(settings, store, task, seed=5)
    # The teacher changed its mind: audits of the student's answers now disagree.
    for i in range(25):
        log_audited_student_answer(store, task, f"student-{i}", teacher_label="negative")
    actions = worker.run_once()
    assert [a.what for a in actions] == ["mode cascade -> shadow"]
    assert "fell below target" in actions[0].detail
    # The rolled-back version is not promoted again on its old held-out evidence.
    assert worker.run_once() == []
    assert store.task_state("review").mode is Mode.SHADOW


def test_drift_on_an_older_schema_still_answered_rolls_it_back(
    settings: Settings, store: Store, task: Task
) -> None:
    worker = worker_with_a_cascading_student(settings, store, task, seed=5)
    # The schema changed (version 2), but clients on the old one still call: version 1's student
    # answers them, and its audits now disagree.
    register_changed_review_task(store)
    for i in range(25):
        log_audited_student_answer(store, task, f"student-{i}", teacher_label="negative")

    actions = worker.run_once()
    assert [a.what for a in actions] == ["mode cascade -> shadow"]
    assert store.task_state("review", 1).mode is Mode.SHADOW
    assert store.task_state("review", 2).mode is Mode.SHADOW


def test_required_free_text_keeps_a_task_in_shadow(settings: Settings, store: Store) -> None:
    request = {
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "triage",
                "schema": {
                    "type": "object",
                    "properties": {
                        "urgent": {"type": "boolean"},
                        "summary": {"type": "string"},
                    },
                    "required": ["urgent", "summary"],
                },
            },
        }
    }
    spec = detect_task(request)
    assert spec is not None
    store.register_task(spec)
    actions = Worker(settings, store).run_once()
    assert [a.what for a in actions] == ["blocked"]
    assert "summary" in actions[0].detail
    assert Worker(settings, store).run_once() == []


def test_recovery_marks_interrupted_runs_and_discards_half_written_artifacts(
    settings: Settings, store: Store, task: Task
) -> None:
    worker = Worker(settings, store)
    store.start_student_run(task, "ngram")
    staging = worker.registry.staging_dir("review")
    (staging / "partial.bin").write_bytes(b"half")
    worker.recover()
    assert [r.status for r in store.student_runs("review")] == ["interrupted"]
    assert not staging.exists()
    # Training resumes: the interrupted run does not count as done.
    log_teacher_calls(store, task, 400, seed=6)
    assert "promoted" in [a.what for a in worker.run_once()]


def test_encoder_students_are_exported_to_int8_onnx_and_evaluated_as_served(
    settings: Settings, tmp_path: Path
) -> None:
    encoder = write_tiny_encoder(tmp_path / "tiny-encoder", seed=0)
    probe_settings = settings.model_copy(
        update={
            "student_kinds": ["probe"],
            "base_encoder": encoder,
            "encoder_student_min_labels": 100,
            "min_heldout_for_switch": 10_000,  # evaluate and publish, but do not switch
        }
    )
    store = open_store(probe_settings)
    task = register_review_task(store)
    log_teacher_calls(store, task, 300, seed=7)
    actions = Worker(probe_settings, store).run_once()
    assert [a.what for a in actions] == ["promoted"]
    published = probe_settings.models_dir / "review" / "v1"
    assert (published / "model.int8.onnx").is_file()
    run = store.student_runs("review")[0]
    assert run.kind == "probe" and run.metrics is not None and run.metrics["agreement"] > 0.6
    # The int8 graph was checked against fp32 on the held-out calls before it was kept.
    assert run.metrics["int8_agreement_with_fp32"] >= probe_settings.int8_min_agreement
    assert run.metrics["int8_scheme"] == "dynamic"  # the fastest scheme was faithful enough


def test_an_int8_graph_below_the_agreement_bar_is_not_served(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny random encoder quantizes without a single flip; stand in for one that flips 10%.
    monkeypatch.setattr(onnx_export, "int8_agreement", lambda _artifact, _texts, _fp32: 0.9)
    encoder = write_tiny_encoder(tmp_path / "tiny-encoder", seed=0)
    strict = settings.model_copy(
        update={
            "student_kinds": ["probe"],
            "base_encoder": encoder,
            "encoder_student_min_labels": 100,
            "min_heldout_for_switch": 10_000,
        }
    )
    store = open_store(strict)
    log_teacher_calls(store, register_review_task(store), 300, seed=7)
    assert [a.what for a in Worker(strict, store).run_once()] == ["promoted"]
    published = strict.models_dir / "review" / "v1"
    assert not (published / "model.int8.onnx").exists()
    assert (published / "model.onnx").is_file()  # the fp32 graph serves, and was evaluated
    metrics = store.student_runs("review")[0].metrics
    assert metrics["int8_agreement_with_fp32"] == 0.9 and metrics["int8_scheme"] is None
