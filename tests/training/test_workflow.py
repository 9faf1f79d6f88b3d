"""train_and_publish from the gateway's store: held-out calls evaluate, the run is logged, and a
worker beside it leaves the run alone while the command lives and closes it once it is gone."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from understudy.processes import ProcessRef
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.training import workflow
from understudy.training.workflow import task_data, train_and_publish
from understudy.worker import Worker
from worker_support import log_teacher_calls, register_review_task

HOST = socket.gethostname()


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, heldout_fraction=0.3)


@pytest.fixture()
def store(settings: Settings) -> Store:
    store = open_store(settings)
    log_teacher_calls(store, register_review_task(store), 200, seed=0)
    return store


def test_train_and_publish_uses_the_stores_heldout_split_and_logs_the_run(
    settings: Settings, store: Store
) -> None:
    data = task_data("review", settings, data=None, store=store)
    assert 30 < len(data.heldout) < 100 and len(data.train) + len(data.heldout) == 200
    published = train_and_publish(
        "ngram", data, ModelRegistry(settings.models_dir), target_agreement=0.9, store=store
    )

    assert published.version == "v1" and published.report is not None
    assert published.report.agreement >= 0.95
    metrics = json.loads((published.path / "metrics.json").read_text())
    assert metrics["heldout"]["n"] == len(data.heldout)
    (run,) = store.student_runs("review")
    assert run.status == "succeeded" and run.version == "v1" and run.kind == "ngram"
    assert run.metrics is not None and run.metrics["train_size"] == len(data.train)


def test_a_worker_starting_meanwhile_leaves_the_command_s_run_alone(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_student = workflow.train_student

    def train_while_a_worker_starts(*args: Any, **kwargs: Any) -> Any:
        result = train_student(*args, **kwargs)
        # `understudy serve` starts (or its worker restarts) while `understudy train` runs: the
        # worker cleans up after its predecessor (runs left running, staging directories).
        worker = Worker(settings, store)
        assert worker.lead()
        worker.worker_lock.release()
        return result

    monkeypatch.setattr(workflow, "train_student", train_while_a_worker_starts)
    data = task_data("review", settings, data=None, store=store)
    published = train_and_publish("ngram", data, ModelRegistry(settings.models_dir), store=store)

    assert published.version == "v1"
    assert [(run.status, run.version) for run in store.student_runs("review")] == [
        ("succeeded", "v1")
    ]


def test_ctrl_c_interrupts_the_run_and_removes_its_staging(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "train_student", interrupted)
    data = task_data("review", settings, data=None, store=store)
    with pytest.raises(KeyboardInterrupt):
        train_and_publish("ngram", data, ModelRegistry(settings.models_dir), store=store)

    assert [run.status for run in store.student_runs("review")] == ["interrupted"]
    assert list(settings.models_dir.rglob("*staging*")) == []


def test_the_worker_closes_the_run_of_a_command_killed_mid_training(
    settings: Settings, store: Store
) -> None:
    killed = subprocess.Popen(["true"])
    killed.wait()
    task = store.get_task("review")
    run = store.start_student_run(task, "finetune", 140, started_by=ProcessRef(killed.pid, HOST))
    Worker(settings.model_copy(update={"student_kinds": ["ngram"]}), store).run_once()
    (closed,) = [r for r in store.student_runs("review") if r.id == run]
    assert closed.status == "interrupted" and closed.metrics is not None
    assert closed.metrics["abandoned"] is True
