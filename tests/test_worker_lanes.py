"""The worker's two training lanes: cheap students retrain inside the pass while an encoder
student trains in the background lane; background students are promoted by the same rules; a
background run cut short is marked interrupted. Real SQLite, real ngram students, a tiny random
encoder, and trainers held at a gate the test opens (no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.tasks import Example, Task
from understudy.testing.tiny_models import write_tiny_encoder, write_tiny_student
from understudy.training import TRAINERS, NgramTrainer, ProbeConfig, ProbeTrainer, TrainResult
from understudy.training.config import DistillConfig, FinetuneConfig
from understudy.worker import Worker, student_config
from worker_support import log_teacher_calls, register_review_task

# Longest wait for a gated trainer or the lane: a broken test fails instead of hanging.
DEADLINE_S = 60.0


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        heldout_fraction=0.5,
        first_train_labels=100,
        encoder_student_min_labels=100,
        finetune_min_labels=100,
        min_heldout_for_switch=150,
        student_kinds=["ngram", "probe"],
        base_encoder=write_tiny_encoder(tmp_path / "tiny-encoder", seed=0),
        student_backend="torch",
    )


@pytest.fixture()
def store(settings: Settings) -> Store:
    return open_store(settings)


@pytest.fixture()
def task(store: Store) -> Task:
    return register_review_task(store)


@pytest.fixture()
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Probe students wait for this event before training: the test decides when they finish."""
    opened = threading.Event()

    class GatedProbeTrainer(ProbeTrainer):
        def train(self, task: Task, examples: list[Example], out_dir: Path) -> TrainResult:
            if not opened.wait(DEADLINE_S):
                raise TimeoutError("the test never opened the gate")
            return super().train(task, examples, out_dir)

    monkeypatch.setitem(TRAINERS, "probe", (GatedProbeTrainer, ProbeConfig))
    yield opened
    opened.set()


@pytest.fixture()
def worker(settings: Settings, store: Store) -> Iterator[Worker]:
    worker = Worker(settings, store)
    yield worker
    worker.close()
    assert worker.wait_for_background(DEADLINE_S), "the background lane never finished"


def statuses(store: Store, kind: str) -> list[str]:
    return [run.status for run in store.student_runs("review") if run.kind == kind]


def whats(actions: list[Any]) -> list[str]:
    """What a pass did, without the policy's mode moves (the held-out split is random)."""
    return [a.what for a in actions if not a.what.startswith("mode")]


def test_ngram_retrains_while_an_encoder_student_trains_in_the_background(
    store: Store, task: Task, worker: Worker, gate: threading.Event
) -> None:
    log_teacher_calls(store, task, 300, seed=1)
    assert whats(worker.run_once(background=True)) == ["promoted", "training"]
    assert statuses(store, "probe") == ["running"]
    assert worker.training_in_background

    # +66% labels: the n-gram student's own clock says retrain, and it does, inside the pass,
    # while the probe is still training.
    log_teacher_calls(store, task, 200, seed=2, start=300)
    second = whats(worker.run_once(background=True))
    assert second in (["promoted"], ["rejected"])
    assert len(statuses(store, "ngram")) == 2
    assert statuses(store, "probe") == ["running"]

    gate.set()
    assert worker.wait_for_background(DEADLINE_S)
    # The next pass reports the background outcome; the tiny random encoder's probe cannot beat
    # the n-gram student on keyword reviews, so the same rule that guards the pass rejects it.
    outcome = worker.run_once(background=True)
    probe = [run for run in store.student_runs("review") if run.kind == "probe"][-1]  # the first
    assert probe.status == "rejected" and probe.metrics is not None
    assert next(a.detail for a in outcome if a.what == "rejected").startswith("probe:")
    ngram_runs = [run for run in store.student_runs("review") if run.kind == "ngram"]
    # The probe trained on the labels there were when it began, the second n-gram on more.
    assert probe.metrics["train_size"] < max(
        int((run.metrics or {})["train_size"]) for run in ngram_runs
    )
    serving = store.task_state("review").serving_version
    assert serving in {run.version for run in ngram_runs}


def test_a_background_student_is_promoted_and_serves(
    settings: Settings, store: Store, task: Task
) -> None:
    worker = Worker(settings.model_copy(update={"student_kinds": ["probe"]}), store)
    log_teacher_calls(store, task, 300, seed=3)
    assert whats(worker.run_once(background=True)) == ["training"]
    assert worker.wait_for_background(DEADLINE_S)

    outcome = worker.run_once(background=True)
    assert whats(outcome) == ["promoted"]
    assert outcome[0].detail.startswith("v1 probe:")
    state = store.task_state("review")
    assert state.serving_version == "v1"
    [run] = store.student_runs("review")
    assert (run.kind, run.status, run.version) == ("probe", "promoted", "v1")
    assert run.metrics is not None and run.metrics["threshold"] == state.threshold
    assert any("(probe) beat the serving student" in (e.reason or "") for e in store.events())
    # Nothing new to learn from: the next pass trains nothing.
    assert whats(worker.run_once(background=True)) == []


def test_a_background_run_cut_short_is_marked_interrupted(
    settings: Settings, store: Store, task: Task, gate: threading.Event
) -> None:
    killed = Worker(settings.model_copy(update={"student_kinds": ["probe"]}), store)
    log_teacher_calls(store, task, 300, seed=4)
    killed.run_once(background=True)
    assert statuses(store, "probe") == ["running"]

    # A restarted worker finds the run its predecessor left running.
    restarted = Worker(settings.model_copy(update={"student_kinds": ["probe"]}), store)
    restarted.recover()
    assert statuses(store, "probe") == ["interrupted"]
    # The predecessor's thread (dead in a real kill) must publish nothing once stopped.
    killed.close()
    gate.set()
    assert killed.wait_for_background(DEADLINE_S)
    assert killed.run_once(background=True) == []
    assert statuses(store, "probe") == ["interrupted"]
    assert not any(p.name.startswith("v") for p in (settings.models_dir / "review").iterdir())

    # The interrupted run does not count as trained: the restarted worker trains the probe.
    assert whats(restarted.run_once(background=True)) == ["training"]
    assert restarted.wait_for_background(DEADLINE_S)
    assert whats(restarted.run_once(background=True)) == ["promoted"]
    assert statuses(store, "probe") == ["promoted", "interrupted"]


def test_a_kind_abandoned_twice_in_a_row_by_a_dying_worker_waits_for_more_labels(
    settings: Settings, store: Store, task: Task, gate: threading.Event
) -> None:
    probe_only = settings.model_copy(update={"student_kinds": ["probe"]})
    log_teacher_calls(store, task, 300, seed=5)
    dead = []
    for _ in range(2):
        # A worker starts the probe and dies training it (the out-of-memory killer, say).
        worker = Worker(probe_only, store)
        worker.recover()
        assert whats(worker.run_once(background=True)) == ["training"]
        dead.append(worker)
    restarted = Worker(probe_only, store)
    restarted.recover()
    assert statuses(store, "probe") == ["interrupted", "interrupted"]
    try:
        # Twice in a row: the probe waits for retrain_growth more labels instead of a third try.
        assert whats(restarted.run_once(background=True)) == []
        log_teacher_calls(store, task, 200, seed=6, start=300)
        assert whats(restarted.run_once(background=True)) == ["training"]
    finally:
        for worker in dead:
            worker.close()
        gate.set()
    assert restarted.wait_for_background(DEADLINE_S)
    assert whats(restarted.run_once(background=True)) == ["promoted"]


def test_close_interrupts_the_run_in_the_lane(
    settings: Settings, store: Store, task: Task, worker: Worker, gate: threading.Event
) -> None:
    log_teacher_calls(store, task, 300, seed=5)
    worker.run_once(background=True)
    assert statuses(store, "probe") == ["running"]
    worker.close()
    assert statuses(store, "probe") == ["interrupted"]
    gate.set()
    assert worker.wait_for_background(DEADLINE_S)
    # Its result is discarded and a closed worker starts nothing more in the background.
    assert "training" not in whats(worker.run_once(background=True))
    assert statuses(store, "probe") == ["interrupted"]


def test_each_kind_keeps_its_own_retrain_clock(
    settings: Settings, store: Store, task: Task
) -> None:
    worker = Worker(
        settings.model_copy(
            update={
                "student_kinds": ["ngram", "probe", "finetune"],
                "encoder_student_min_labels": 150,
                "finetune_min_labels": 400,
            }
        ),
        store,
    )
    log_teacher_calls(store, task, 900, seed=6)
    labelled = store.count_labelled("review", heldout=False)
    assert 400 <= labelled < 500
    finished = {"ngram": labelled, "probe": int(labelled / 1.3)}
    for kind, train_size in finished.items():
        store.finish_student_run(
            store.start_student_run(task, kind), "rejected", metrics={"train_size": train_size}
        )
    # ngram trained on every label: not due. The probe saw 30% fewer: due. The fine-tuned student
    # never trained: due, and first, ahead of a retrain.
    assert worker.due_kinds(task) == (labelled, ["finetune", "probe"])
    # Below its own minimum a kind is not due whatever the others did.
    strict = Worker(worker.settings.model_copy(update={"finetune_min_labels": 10_000}), store)
    assert strict.due_kinds(task) == (labelled, ["probe"])


def recording_trainer(seen: list[tuple[list[str], Any]]) -> type:
    """A trainer class that records what the worker asks of an encoder student (texts, config)
    and trains an n-gram one instead."""

    class RecordingTrainer:
        def __init__(self, config: FinetuneConfig) -> None:
            self.config = config

        def train(self, task: Task, examples: list[Example], out_dir: Path) -> TrainResult:
            seen.append(([e.text for e in examples], self.config))
            result: TrainResult = NgramTrainer().train(task, examples, out_dir)
            return result

    return RecordingTrainer


def test_finetuned_students_train_on_the_newest_labels_within_the_cost_bounds(
    settings: Settings, store: Store, task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[list[str], Any]] = []
    monkeypatch.setitem(TRAINERS, "finetune", (recording_trainer(seen), FinetuneConfig))
    bounded = settings.model_copy(
        update={
            "student_kinds": ["finetune"],
            "finetune_max_examples": 120,
            "finetune_epochs": 3,
            "finetune_max_length": 24,
        }
    )
    log_teacher_calls(store, task, 400, seed=7)
    worker = Worker(bounded, store)
    assert whats(worker.run_once(background=True)) == ["training"]
    assert worker.wait_for_background(DEADLINE_S)
    assert whats(worker.run_once(background=True)) == ["promoted"]

    [(texts, config)] = seen
    newest = [e.text for e in store.examples("review", heldout=False)][-120:]
    assert texts == newest
    assert (config.epochs, config.max_length) == (3, 24)
    assert config == student_config("finetune", bounded)
    [run] = store.student_runs("review")
    assert run.metrics is not None and run.metrics["trained_examples"] == 120
    assert run.metrics["train_size"] == store.count_labelled("review", heldout=False)


def test_the_distilled_student_starts_from_the_newest_finetuned_student(
    settings: Settings, store: Store, task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[list[str], Any]] = []
    monkeypatch.setitem(TRAINERS, "distill", (recording_trainer(seen), DistillConfig))
    registry = ModelRegistry(settings.models_dir)
    staging = write_tiny_student(registry.staging_dir(task.key), task.heads, task=task.key)
    finetuned = registry.path(task.key, registry.publish(staging, task.key))
    distill = settings.model_copy(update={"student_kinds": ["distill"], "distill_layers": 3})
    log_teacher_calls(store, task, 400, seed=7)
    worker = Worker(distill, store, registry)
    assert whats(worker.run_once(background=True)) == ["training"]
    assert worker.wait_for_background(DEADLINE_S)

    [(_, config)] = seen
    assert config.assistant_dir == finetuned
    assert config.num_layers == 3


def test_by_default_the_worker_trains_the_recipe_the_benchmarks_measure() -> None:
    # The settings restate the trainers' defaults for the README's table (the gateway must not
    # import the trainers); this keeps the two from drifting apart.
    defaults = Settings()
    finetune = student_config("finetune", defaults)
    distill = student_config("distill", defaults)
    assert isinstance(finetune, FinetuneConfig) and isinstance(distill, DistillConfig)
    assert finetune.max_length == FinetuneConfig.max_length
    assert finetune.epochs == FinetuneConfig.epochs
    assert distill.max_length == DistillConfig.max_length
    assert distill.num_layers == DistillConfig.num_layers
    probe = student_config("probe", defaults)
    assert isinstance(probe, ProbeConfig) and probe.max_length == ProbeConfig.max_length
