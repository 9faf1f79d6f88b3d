"""Train, evaluate and publish one student: the steps behind ``understudy train``.

Data comes from the gateway's store (held-out calls are the ones the store assigned to the
held-out split) or from a JSONL file (held-out rows chosen by a hash of the text).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from understudy.errors import ConfigurationError
from understudy.evaluation import EvaluationReport, evaluate, write_heldout_metrics
from understudy.processes import ProcessRef
from understudy.serving.loader import load_student
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store
from understudy.tasks import Example, Task
from understudy.training import TRAINERS, StudentConfig, TrainResult, train_student
from understudy.training.jsonl import read_examples, split_by_hash, task_from_examples


@dataclass(frozen=True)
class TaskData:
    """A task with its training and held-out examples."""

    task: Task
    train: list[Example]
    heldout: list[Example]


@dataclass(frozen=True)
class PublishedStudent:
    """A trained, evaluated and published student."""

    task_key: str
    version: str
    path: Path
    result: TrainResult
    report: EvaluationReport | None


def task_data(
    task_key: str, settings: Settings, *, data: Path | None, store: Store | None
) -> TaskData:
    """The task's examples from ``data`` (JSONL) when given, else from ``store``."""
    if data is not None:
        examples = read_examples(data)
        train, heldout = split_by_hash(examples, settings.heldout_fraction)
        return TaskData(task_from_examples(task_key, examples), train, heldout)
    if store is None:
        raise ConfigurationError("give a JSONL file of labelled examples or use the store")
    task = store.get_task(task_key)
    return TaskData(
        task,
        store.examples(task_key, heldout=False),
        store.examples(task_key, heldout=True),
    )


def build_config(kind: str, overrides: dict[str, Any]) -> StudentConfig:
    """The kind's default config with ``overrides`` (None values skipped) applied.

    Raises ConfigurationError for an unknown kind or an option the kind does not have, so that a
    flag is never silently ignored.
    """
    if kind not in TRAINERS:
        raise ConfigurationError(
            f"unknown student kind {kind!r}; choose one of {', '.join(TRAINERS)}"
        )
    config_class = TRAINERS[kind][1]
    names = {f.name for f in dataclasses.fields(config_class)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ConfigurationError(f"a {kind} student has no option {', '.join(unknown)}")
    config: StudentConfig = config_class(**given)
    return config


def train_and_publish(
    kind: str,
    data: TaskData,
    registry: ModelRegistry,
    *,
    config: StudentConfig | None = None,
    target_agreement: float = 0.98,
    store: Store | None = None,
) -> PublishedStudent:
    """Train a student into a staging directory, evaluate it on the held-out examples (its report
    goes into ``metrics.json``), publish it as the task's next version.

    With a ``store`` the run is logged as a student run, as this process's (a worker taking the
    worker lock leaves the run and its staging directory alone while it lives). Raises
    InsufficientData when there are too few labels; the staging directory is removed on any
    failure, Ctrl-C included (the run is then ``interrupted``).
    """
    this_process = ProcessRef.current()
    run_id = None
    if store:
        run_id = store.start_student_run(data.task, kind, len(data.train), started_by=this_process)
    staging = registry.staging_dir(data.task.key, owner=this_process)
    try:
        result = train_student(kind, data.task, data.train, staging, config)
        report = None
        if data.heldout:
            report = evaluate(
                load_student(staging, "torch"), data.task, data.heldout, target_agreement
            )
            write_heldout_metrics(staging, report)
        version = registry.publish(staging, data.task.key)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if store and run_id is not None:
            status = "failed" if isinstance(error, Exception) else "interrupted"
            store.finish_student_run(run_id, status, metrics={"error": str(error) or repr(error)})
        raise
    if store and run_id is not None:
        metrics = {**(report.to_json() if report else {}), "train_size": len(data.train)}
        store.finish_student_run(run_id, "succeeded", version=version, metrics=metrics)
    return PublishedStudent(
        data.task.key, version, registry.path(data.task.key, version), result, report
    )
