"""The worker: trains, evaluates and promotes students, and moves tasks between modes.

One pass (``Worker.run_once``) visits the latest version of every task:

1. train when the task has enough new labelled calls (cheapest student kinds first), evaluate each
   candidate on the held-out calls it never trained on, and publish it only if it beats the
   serving student on the same held-out set; the gateway hot-swaps to the new serving version;
2. apply the switch policy (``understudy.routing.policy``) to the held-out evidence of the serving
   student and the live agreement measured on audited calls, recording every move as an event.

The worker runs in its own process so training never blocks the gateway; both talk only through the
store and the model registry. A killed worker loses nothing: runs left ``running`` are marked
``interrupted`` at start-up, and the labels they would have used are still in the store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from understudy.evaluation import EvaluationReport, evaluate
from understudy.evaluation.report import write_heldout_metrics
from understudy.privacy import RETENTION_PASS_INTERVAL_S, purge_raw_bodies
from understudy.routing import (
    HeldoutEvidence,
    LiveEvidence,
    Mode,
    SwitchKnobs,
    decide_mode_change,
)
from understudy.serving.loader import load_student
from understudy.serving.onnx_export import export_onnx
from understudy.serving.registry import ModelRegistry
from understudy.serving.student import Student
from understudy.settings import Settings
from understudy.store import Store, switch
from understudy.store.records import TaskState
from understudy.tasks import Example, Task
from understudy.training import TRAINERS, StudentConfig, train_student

logger = logging.getLogger(__name__)

ENCODER_KINDS = frozenset({"probe", "finetune", "distill"})


@dataclass(frozen=True)
class WorkerAction:
    """Something a pass did, for logs, the demo's live view and tests."""

    task_key: str
    what: str
    detail: str


def knobs_from(settings: Settings, state: TaskState) -> SwitchKnobs:
    """The policy thresholds for a task: its own target agreement, else the settings'."""
    return SwitchKnobs(
        target_agreement=state.target_agreement or settings.target_agreement,
        min_heldout=settings.min_heldout_for_switch,
        min_coverage_for_cascade=settings.min_coverage_for_cascade,
        full_coverage_for_student=settings.full_coverage_for_student,
        min_live_for_rollback=settings.min_live_for_rollback,
    )


def student_config(kind: str, settings: Settings) -> StudentConfig:
    """The trainer config of a student kind, with the encoder and lengths from settings."""
    _, config_class = TRAINERS[kind]
    wanted = {
        "encoder_dir": settings.base_encoder,
        "max_length": settings.max_length,
        "cache_dir": settings.data_dir / "embeddings",
        "progress": False,
    }
    names = {field.name for field in dataclasses.fields(config_class)}
    config: StudentConfig = config_class(**{k: v for k, v in wanted.items() if k in names})
    return config


def beats(candidate: EvaluationReport, incumbent: EvaluationReport | None) -> bool:
    """Whether a candidate should replace the serving student, judged on the same held-out set.

    More coverage at the target agreement wins; with equal coverage (e.g. none), higher overall
    agreement with the teacher wins.
    """
    if incumbent is None:
        return True
    new, old = candidate.coverage or 0.0, incumbent.coverage or 0.0
    if new != old:
        return new > old
    return candidate.agreement > incumbent.agreement


class Worker:
    """Background loop over tasks; see the module docstring for what a pass does."""

    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry | None = None):
        self.settings = settings
        self.store = store
        self.registry = registry or ModelRegistry(settings.models_dir)

    def recover(self) -> None:
        """Clean up after a killed predecessor: interrupted runs and half-written artifacts."""
        interrupted = switch.interrupt_running_runs(self.store)
        if interrupted:
            logger.warning("marked %d training run(s) left running as interrupted", interrupted)
        discarded = self.registry.discard_staging()
        if discarded:
            logger.warning("discarded %d half-written artifact(s)", discarded)

    def run(self, stop: threading.Event) -> None:
        """Pass over all tasks every ``worker_poll_s`` seconds until ``stop`` is set; with
        ``retention_days`` set, purge old raw bodies every ``RETENTION_PASS_INTERVAL_S``."""
        self.recover()
        next_retention = time.monotonic()
        while not stop.is_set():
            try:
                self.run_once()
                if self.settings.retention_days is not None and time.monotonic() >= next_retention:
                    purge_raw_bodies(self.store, self.settings.retention_days)
                    next_retention = time.monotonic() + RETENTION_PASS_INTERVAL_S
            except Exception:
                # A broken pass must not kill the loop; the next pass starts from the store again.
                logger.exception("worker pass failed")
            stop.wait(self.settings.worker_poll_s)

    def run_once(self) -> list[WorkerAction]:
        """One pass over the latest version of every task; returns what it did."""
        actions: list[WorkerAction] = []
        for task, state in self.store.latest_tasks():
            actions.extend(self.step(task, state))
        return actions

    def step(self, task: Task, state: TaskState) -> list[WorkerAction]:
        """Train if due, then apply the switch policy, for one task version."""
        if state.mode is Mode.TEACHER:
            return []
        if not task.student_can_answer:
            return self._note_blocked(task)
        actions = self._train_if_due(task, state)
        state = self.store.task_state(task.key, task.version)
        actions.extend(self._apply_policy(task, state))
        return actions

    # --- training --------------------------------------------------------------------------

    def _note_blocked(self, task: Task) -> list[WorkerAction]:
        if any(e.kind == "blocked" for e in self.store.events(task.key, limit=1000)):
            return []
        fields = ", ".join(task.required_free_text_fields)
        reason = f"required free-text field(s) {fields}: a student cannot produce them"
        self.store.record_event(task.key, "blocked", reason, {"fields": fields})
        return [WorkerAction(task.key, "blocked", reason)]

    def _training_due(self, task: Task) -> int | None:
        """Labelled training calls if a new round of training is due, else None."""
        labelled = self.store.count_labelled(task.key, task.version, heldout=False)
        if labelled < self.settings.first_train_labels:
            return None
        finished = [
            run
            for run in self.store.student_runs(task.key)
            if run.task_version == task.version and run.status in ("promoted", "rejected")
        ]
        trained_on = max(
            (int((run.metrics or {}).get("train_size", 0)) for run in finished), default=0
        )
        if trained_on and labelled < trained_on * (1 + self.settings.retrain_growth):
            return None
        return labelled

    def _train_if_due(self, task: Task, state: TaskState) -> list[WorkerAction]:
        labelled = self._training_due(task)
        if labelled is None:
            return []
        kinds = [
            kind
            for kind in self.settings.student_kinds
            if kind not in ENCODER_KINDS or labelled >= self.settings.encoder_student_min_labels
        ]
        train = self.store.examples(task.key, task.version, heldout=False)
        heldout = self.store.examples(task.key, task.version, heldout=True)
        target = state.target_agreement or self.settings.target_agreement
        serving = self._serving_student(task, state)
        best = None if serving is None else evaluate(serving, task, heldout, target)
        actions = []
        for kind in kinds:
            outcome = self._train_candidate(task, kind, train, heldout, target, best)
            if outcome is None:
                actions.append(WorkerAction(task.key, "failed", f"{kind} student failed"))
                continue
            version, report = outcome
            summary = (
                f"{kind}: agreement {report.agreement:.3f}, coverage at target "
                f"{(report.coverage or 0.0):.1%} on {report.n} held-out calls"
            )
            if version is None:
                actions.append(WorkerAction(task.key, "rejected", summary))
                continue
            # Serve the winner at once: slower kinds may still be training after it.
            best = report
            self.store.update_task_state(
                task.key,
                serving_version=version,
                threshold=report.threshold,
                reason=f"student {version} ({kind}) beat the serving student",
                version=task.version,
            )
            actions.append(WorkerAction(task.key, "promoted", f"{version} {summary}"))
        return actions

    def _train_candidate(
        self,
        task: Task,
        kind: str,
        train: list[Example],
        heldout: list[Example],
        target: float,
        incumbent: EvaluationReport | None,
    ) -> tuple[str | None, EvaluationReport] | None:
        """Train and evaluate one candidate; publish it if it beats ``incumbent``.

        Returns (published version or None, report), or None when training failed.
        """
        run_id = self.store.start_student_run(task, kind)
        staging = self.registry.staging_dir(task.key)
        try:
            train_student(kind, task, train, staging, student_config(kind, self.settings))
            if kind in ENCODER_KINDS and self.settings.student_backend == "onnx":
                export_onnx(staging, quantize_int8=True)
            report = evaluate(load_student(staging), task, heldout, target)
            write_heldout_metrics(staging, report)
        except Exception as error:
            logger.exception("task %s: training a %s student failed", task.key, kind)
            shutil.rmtree(staging, ignore_errors=True)
            self.store.finish_student_run(run_id, "failed", metrics={"error": str(error)})
            return None
        metrics = {**report.to_json(), "train_size": len(train)}
        if not beats(report, incumbent):
            shutil.rmtree(staging, ignore_errors=True)
            self.store.finish_student_run(run_id, "rejected", metrics=metrics)
            return None, report
        version = self.registry.publish(staging, task.key)
        self.store.finish_student_run(run_id, "promoted", version=version, metrics=metrics)
        return version, report

    def _serving_student(self, task: Task, state: TaskState) -> Student | None:
        if state.serving_version is None:
            return None
        try:
            return self.registry.load(task.key, state.serving_version)
        except Exception:
            logger.exception(
                "task %s: serving student %s failed to load", task.key, state.serving_version
            )
            return None

    # --- switch policy ---------------------------------------------------------------------

    def _heldout_evidence(self, task: Task, state: TaskState) -> HeldoutEvidence | None:
        if state.serving_version is None:
            return None
        for run in self.store.student_runs(task.key):
            if run.task_version == task.version and run.version == state.serving_version:
                metrics = run.metrics or {}
                return HeldoutEvidence(
                    version=state.serving_version,
                    threshold=metrics.get("threshold"),
                    coverage=float(metrics.get("coverage") or 0.0),
                    agreement_lower_bound=float(metrics.get("threshold_lower_bound") or 0.0),
                    heldout_size=int(metrics.get("n", 0)),
                )
        return None

    def _apply_policy(self, task: Task, state: TaskState) -> list[WorkerAction]:
        heldout = self._heldout_evidence(task, state)
        since = switch.last_mode_change(self.store, task.key, task.version)
        comparisons, agreements = switch.live_agreement(
            self.store,
            task.key,
            task.version,
            student_version=state.serving_version,
            answered_by_student=state.mode is not Mode.SHADOW,
            since=since,
            window=self.settings.live_window,
        )
        rolled_back = switch.rolled_back_versions(self.store, task.key, task.version)
        change = decide_mode_change(
            state.mode,
            heldout,
            LiveEvidence(comparisons, agreements),
            knobs_from(self.settings, state),
            promotable=state.serving_version not in rolled_back,
        )
        if change is None:
            return []
        self.store.set_mode(task.key, change.to_mode, change.reason, change.evidence, task.version)
        return [WorkerAction(task.key, f"mode {state.mode} -> {change.to_mode}", change.reason)]


def spawn_worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    """Start ``understudy worker`` as a child process with these settings (for ``serve``)."""
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen([sys.executable, "-m", "understudy", "worker"], env=env)
