"""The worker: trains, evaluates and promotes students, and moves tasks between modes.

One pass (``Worker.run_once``) visits the latest version of every task:

1. train each student kind that is due: a kind first trains once the task has its minimum of
   labelled calls (``min_labels``), then again each time they grew by ``retrain_growth`` since
   that kind last trained, so a slow kind never holds back the others' retraining. Cheap kinds
   (ngram) train inside the pass; encoder kinds (probe, finetune, distill) train one at a time in
   a background lane (``TrainingLane``) while the passes go on, a kind never trained before first.
   Every candidate is evaluated on the held-out calls it never trained on and published only if it
   beats the serving student on the same held-out calls (``beats``); the gateway hot-swaps to the
   new serving version;
2. apply the switch policy (``understudy.routing.policy``) to the held-out evidence of the serving
   student and the live agreement measured on audited calls, recording every move as an event.

The worker runs in its own process so training never blocks the gateway; both talk only through the
store and the model registry. One worker acts on a database at a time: ``run`` passes only while it
holds the database's worker lock (``WorkerLock``), so the workers of replicas sharing a database
stand by until the one that acts goes away. A killed worker loses nothing: when a worker takes the
lock, runs left ``running`` (in the pass or in the lane) are marked ``interrupted``, and the labels
they would have used are still in the store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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
from understudy.routing.overrides import task_target
from understudy.serving.loader import load_student
from understudy.serving.onnx_export import export_onnx
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store, switch, worker_status
from understudy.store.records import StudentRun, TaskState
from understudy.store.worker_lock import WorkerLock
from understudy.tasks import Example, Task
from understudy.training import TRAINERS, DistillConfig, StudentConfig, train_student
from understudy.training_lane import TrainingLane

logger = logging.getLogger(__name__)

ENCODER_KINDS = frozenset({"probe", "finetune", "distill"})
"""Student kinds that run an encoder: they train in the background lane."""
FINETUNED_KINDS = frozenset({"finetune", "distill"})
"""Encoder kinds that train the encoder itself (minutes of CPU): bounded by the finetune_* knobs."""
DONE_STATUSES = ("promoted", "rejected", "failed")
"""Run outcomes after which a kind waits for ``retrain_growth`` more labels (not interrupted)."""
ABANDONED_RUNS_BEFORE_WAITING = 2
"""A kind whose newest runs, this many in a row, were abandoned by a worker that died (killed,
crashed, out of memory) waits for ``retrain_growth`` more labels as after a failed run, so a
student too big for the machine does not kill its worker in a loop."""


@dataclass(frozen=True)
class WorkerAction:
    """Something a pass did, for logs, the demo's live view and tests."""

    task_key: str
    what: str
    detail: str


def min_labels(kind: str, settings: Settings) -> int:
    """Labelled training calls a task needs before a student of ``kind`` first trains."""
    needed = settings.first_train_labels
    if kind in FINETUNED_KINDS:
        needed = max(needed, settings.finetune_min_labels)
    elif kind in ENCODER_KINDS:
        needed = max(needed, settings.encoder_student_min_labels)
    return needed


def student_config(kind: str, settings: Settings) -> StudentConfig:
    """The trainer config of a student kind, with the encoder, lengths and epochs from settings."""
    _, config_class = TRAINERS[kind]
    wanted: dict[str, object] = {
        "encoder_dir": settings.base_encoder,
        "max_length": settings.max_length,
        "cache_dir": settings.data_dir / "embeddings",
        "progress": False,
    }
    if kind in FINETUNED_KINDS:
        wanted["max_length"] = settings.finetune_max_length
        if settings.finetune_epochs is not None:
            wanted["epochs"] = settings.finetune_epochs
    if kind == "distill":
        wanted["num_layers"] = settings.distill_layers
    names = {field.name for field in dataclasses.fields(config_class)}
    config: StudentConfig = config_class(**{k: v for k, v in wanted.items() if k in names})
    return config


def beats(
    candidate: EvaluationReport, incumbent: EvaluationReport | None, *, answering: bool = False
) -> bool:
    """Whether a candidate should replace the serving student, judged on the same held-out set.

    More coverage at the target agreement wins; with equal coverage (e.g. none), higher overall
    agreement with the teacher wins. ``answering``: the serving student answers calls (cascade or
    student mode). Then a candidate with no threshold at the target never replaces it: it could
    answer nothing, so publishing it would drop the task back to shadow on the lower bound of a
    grown held-out set that hovers at the target (a task flapped shadow -> cascade -> shadow twice
    in one end-to-end run that way). The serving student stays, judged by the live audit, which
    rolls it back only when an upper bound of its agreement falls below the target.
    """
    if incumbent is None:
        return True
    if answering and candidate.threshold is None:
        return False
    new, old = candidate.coverage or 0.0, incumbent.coverage or 0.0
    if new != old:
        return new > old
    return candidate.agreement > incumbent.agreement


def _train_size(run: StudentRun) -> int:
    """The labelled training calls a run started from (0 when it did not record them)."""
    return int((run.metrics or {}).get("train_size", 0))


class Worker:
    """Background loop over tasks; see the module docstring for what a pass does."""

    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry | None = None):
        self.settings = settings
        self.store = store
        self.registry = registry or ModelRegistry(settings.models_dir)
        self._lane: TrainingLane[list[WorkerAction]] = TrainingLane()
        # Held while a candidate is compared with the serving student and published, since the
        # pass and the lane both promote; it also guards the lane's run id and ``_closed``.
        self._lock = threading.Lock()
        self._lane_run: int | None = None
        self._abandoned: set[int] = set()
        self._closed = False
        self.worker_lock = WorkerLock(store.engine)
        self._recovered = False
        self._standing_by = False

    @property
    def training_in_background(self) -> bool:
        """Whether an encoder student is training in the background lane now."""
        return self._lane.busy

    def wait_for_background(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the background lane's student; True when none
        trains any more (its outcome is reported by the next pass)."""
        return self._lane.join(timeout_s)

    def lead(self) -> bool:
        """Whether this worker may act now: it holds the database's worker lock, taking it if it
        is free. The first time it takes it, it cleans up after the worker before it (``recover``);
        while another worker holds it, it says so once and stands by. Taking it is recorded in
        the heartbeat (``worker_status``), as every pass is."""
        newly = not self.worker_lock.held
        if not self.worker_lock.acquire():
            if not self._standing_by:
                logger.warning(
                    "worker: %s holds this database's worker lock; standing by", self.lock_holder()
                )
                self._standing_by = True
            return False
        if self._standing_by:
            logger.info("worker: took over this database's worker lock")
            self._standing_by = False
        if newly:
            worker_status.record_takeover(self.store, os.getpid(), socket.gethostname())
        if not self._recovered:
            # Only once: later, a run left ``running`` may be this worker's own, in its lane.
            self.recover()
            self._recovered = True
        return True

    def lock_holder(self) -> str:
        """Who holds the database's worker lock (its heartbeat's process and host), for messages."""
        return worker_status.worker_status(self.store, self.settings.worker_poll_s).holder

    def recover(self) -> None:
        """Clean up after a killed predecessor: interrupted runs and half-written artifacts."""
        for run in switch.interrupt_running_runs(self.store):
            logger.warning(
                "task %s: %s run %d was left running by a worker that died: marked interrupted "
                "(after %d such runs in a row the kind waits for more labels)",
                run.task_key,
                run.kind,
                run.id,
                ABANDONED_RUNS_BEFORE_WAITING,
            )
        discarded = self.registry.discard_staging()
        if discarded:
            logger.warning("discarded %d half-written artifact(s)", discarded)

    def close(self) -> None:
        """Stop training in the background: a run still in the lane is marked ``interrupted``
        now and whatever it produces later is discarded (training cannot be cancelled midway)."""
        with self._lock:
            self._closed = True
            run_id = self._lane_run
            if run_id is None:
                return
            self._abandoned.add(run_id)
            # The run may have just finished (promoted, rejected) before its job let go of it.
            interrupted = self.store.finish_student_run(run_id, "interrupted")
        if interrupted:
            logger.warning("stopped while training run %d in the background: interrupted", run_id)

    def run(self, stop: threading.Event) -> None:
        """Pass over all tasks every ``worker_poll_s`` seconds until ``stop`` is set, encoder
        students training in the background lane, while this worker holds the database's worker
        lock (``lead``); with ``retention_days`` set, purge old raw bodies every
        ``RETENTION_PASS_INTERVAL_S``. Closes the worker and lets the lock go when it returns."""
        next_retention = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    if not self.lead():
                        stop.wait(self.settings.worker_poll_s)
                        continue
                    for action in self.run_once(background=True):
                        logger.info("task %s: %s: %s", action.task_key, action.what, action.detail)
                    if (
                        self.settings.retention_days is not None
                        and time.monotonic() >= next_retention
                    ):
                        purge_raw_bodies(self.store, self.settings.retention_days)
                        next_retention = time.monotonic() + RETENTION_PASS_INTERVAL_S
                except Exception:
                    # A broken pass must not kill the loop; the next pass starts from the store.
                    logger.exception("worker pass failed")
                stop.wait(self.settings.worker_poll_s)
        finally:
            self.close()
            self.worker_lock.release()

    def run_once(self, *, background: bool = False) -> list[WorkerAction]:
        """One pass over the latest version of every task; returns what it did.

        With ``background`` (what ``run`` does), encoder students train in the background lane:
        the pass starts at most one and returns without waiting, and a later pass reports what
        it became. Without, every due student trains inside this pass.
        """
        actions = [action for outcome in self._lane.outcomes() for action in outcome]
        for run in switch.interrupt_running_runs(self.store, commands_only=True):
            logger.warning(
                "task %s: %s run %d was left running by an `understudy train` that stopped "
                "without finishing it: marked interrupted",
                run.task_key,
                run.kind,
                run.id,
            )
        for task, state in self.store.latest_tasks():
            actions.extend(self.step(task, state, background=background))
        for task, state in self.store.older_answering_tasks():
            # Nothing trains for an old schema, but its student still answers the callers on it,
            # so its live audits are still judged (and a drift rolls it back).
            actions.extend(self._apply_policy(task, state))
        worker_status.record_pass(self.store)
        return actions

    def step(self, task: Task, state: TaskState, *, background: bool = False) -> list[WorkerAction]:
        """Train what is due, then apply the switch policy, for one task version."""
        if state.mode is Mode.TEACHER:
            return []
        if not task.student_can_answer:
            return self._note_blocked(task)
        actions = self._train_due(task, state, background)
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

    def due_kinds(self, task: Task) -> tuple[int, list[str]]:
        """The task's labelled training calls, and the student kinds due to train on them.

        A kind is due at ``min_labels(kind)`` and then each time the labels grew by
        ``retrain_growth`` over what its own last finished run saw (or, after
        ``ABANDONED_RUNS_BEFORE_WAITING`` runs in a row abandoned by a dying worker, the newest of
        them). Kinds never trained come first, then the order of ``student_kinds``.
        """
        labelled = self.store.count_labelled(task.key, task.version, heldout=False)
        runs = [
            run for run in self.store.student_runs(task.key) if run.task_version == task.version
        ]
        trained_on: dict[str, int] = {}
        for run in runs:
            if run.status in DONE_STATUSES:
                trained_on[run.kind] = max(trained_on.get(run.kind, 0), _train_size(run))
        for kind in self.settings.student_kinds:
            newest = [run for run in runs if run.kind == kind][:ABANDONED_RUNS_BEFORE_WAITING]
            if len(newest) == ABANDONED_RUNS_BEFORE_WAITING and all(
                (run.metrics or {}).get("abandoned") for run in newest
            ):
                trained_on[kind] = max(trained_on.get(kind, 0), _train_size(newest[0]))
        due = [
            kind
            for kind in self.settings.student_kinds
            if labelled >= min_labels(kind, self.settings)
            and labelled >= trained_on.get(kind, 0) * (1 + self.settings.retrain_growth)
        ]
        return labelled, sorted(due, key=lambda kind: trained_on.get(kind, 0) > 0)

    def _train_due(self, task: Task, state: TaskState, background: bool) -> list[WorkerAction]:
        # Checked before the due kinds are read: a run that ends in between must not look due.
        lane_idle = not self._lane.busy
        labelled, due = self.due_kinds(task)
        target = task_target(state, self.settings)
        actions = []
        for kind in due:
            if kind not in ENCODER_KINDS or not background:
                run_id = self.store.start_student_run(task, kind, labelled)
                actions.extend(self._train_candidate(task, kind, target, run_id))
        encoders = [kind for kind in due if kind in ENCODER_KINDS]
        if background and encoders and lane_idle:
            actions.extend(self._start_in_background(task, encoders[0], target, labelled))
        return actions

    def _start_in_background(
        self, task: Task, kind: str, target: float, labelled: int
    ) -> list[WorkerAction]:
        with self._lock:
            if self._closed:
                return []
            run_id = self.store.start_student_run(task, kind, labelled)
            self._lane_run = run_id

        def job() -> list[WorkerAction]:
            try:
                return self._train_candidate(task, kind, target, run_id)
            finally:
                with self._lock:
                    self._lane_run = None

        self._lane.start(job)
        detail = f"{kind} student on {labelled} labelled calls, in the background"
        return [WorkerAction(task.key, "training", detail)]

    def _train_candidate(
        self, task: Task, kind: str, target: float, run_id: int
    ) -> list[WorkerAction]:
        """Train and evaluate one candidate for run ``run_id``; publish it if it beats the
        serving student (``_publish_if_better``)."""
        staging = self.registry.staging_dir(task.key)
        available = 0  # labelled training calls when the run began: its retrain clock
        try:
            train = self.store.examples(task.key, task.version, heldout=False)
            available = len(train)
            if kind in FINETUNED_KINDS:
                # The newest labels: the traffic the student will answer next looks most like them.
                train = train[-self.settings.finetune_max_examples :]
            config = student_config(kind, self.settings)
            if isinstance(config, DistillConfig):
                # The newest fine-tuned student is the teacher assistant (None: base encoder).
                assistant = self.registry.newest_of_kind(task.key, task.version, "finetune")
                config = dataclasses.replace(config, assistant_dir=assistant)
            train_student(kind, task, train, staging, config)
            heldout = self.store.examples(task.key, task.version, heldout=True)
            int8_agreement, int8_scheme = None, None
            if kind in ENCODER_KINDS and self.settings.student_backend == "onnx":
                exported = export_onnx(
                    staging,
                    quantize_int8=True,
                    check_texts=[example.text for example in heldout],
                    min_int8_agreement=self.settings.int8_min_agreement,
                )
                int8_agreement, int8_scheme = exported.int8_agreement, exported.int8_scheme
            report = evaluate(load_student(staging), task, heldout, target)
            write_heldout_metrics(staging, report)
        except Exception as error:
            logger.exception("task %s: training a %s student failed", task.key, kind)
            shutil.rmtree(staging, ignore_errors=True)
            with self._lock:
                if run_id in self._abandoned:
                    return []
                self.store.finish_student_run(
                    run_id, "failed", metrics={"error": str(error), "train_size": available}
                )
            return [WorkerAction(task.key, "failed", f"{kind} student failed: {error}")]
        summary = (
            f"{kind}: agreement {report.agreement:.3f}, coverage at target "
            f"{(report.coverage or 0.0):.1%} on {report.n} held-out calls"
        )
        metrics = {
            **report.to_json(),
            "train_size": available,
            "trained_examples": len(train),
            "int8_agreement_with_fp32": int8_agreement,
            "int8_scheme": int8_scheme,
        }
        return self._publish_if_better(task, run_id, staging, report, heldout, metrics, summary)

    def _publish_if_better(
        self,
        task: Task,
        run_id: int,
        staging: Path,
        report: EvaluationReport,
        heldout: list[Example],
        metrics: dict[str, object],
        summary: str,
    ) -> list[WorkerAction]:
        """Publish the candidate in ``staging`` and serve it if it beats the serving student on
        the same ``heldout`` calls; else discard it. Records the run's outcome."""
        while True:
            serving = self.store.task_state(task.key, task.version).serving_version
            # Evaluated outside the lock: an encoder takes seconds on a large held-out set.
            incumbent = self._serving_report(task, serving, heldout, report.target_agreement)
            with self._lock:
                state = self.store.task_state(task.key, task.version)
                if state.serving_version != serving:
                    continue  # another candidate was promoted meanwhile: compare with that one
                if run_id in self._abandoned:
                    shutil.rmtree(staging, ignore_errors=True)
                    return []
                if self.store.student_run_status(run_id) != "running":
                    # Another worker took the worker lock while this one trained (a PostgreSQL
                    # connection lost with its lock) and marked the run interrupted: it acts now.
                    shutil.rmtree(staging, ignore_errors=True)
                    logger.warning(
                        "task %s: run %d was closed by another worker while it trained "
                        "(this worker lost the worker lock): its student is discarded",
                        task.key,
                        run_id,
                    )
                    detail = f"{summary}; another worker took over run {run_id}"
                    return [WorkerAction(task.key, "discarded", detail)]
                answering = state.mode in (Mode.CASCADE, Mode.STUDENT)
                if not beats(report, incumbent, answering=answering):
                    shutil.rmtree(staging, ignore_errors=True)
                    self.store.finish_student_run(run_id, "rejected", metrics=metrics)
                    return [WorkerAction(task.key, "rejected", summary)]
                version = self.registry.publish(staging, task.key)
                self.store.finish_student_run(run_id, "promoted", version=version, metrics=metrics)
                self.store.update_task_state(
                    task.key,
                    serving_version=version,
                    threshold=report.threshold,
                    reason=f"student {version} ({report.student_kind}) beat the serving student",
                    version=task.version,
                )
            return [WorkerAction(task.key, "promoted", f"{version} {summary}")]

    def _serving_report(
        self, task: Task, version: str | None, heldout: list[Example], target: float
    ) -> EvaluationReport | None:
        """The serving student's evaluation on ``heldout``; None without one (or when it fails
        to load, so that a working candidate replaces it)."""
        if version is None:
            return None
        try:
            student = self.registry.load(task.key, version)
        except Exception:
            logger.exception("task %s: serving student %s failed to load", task.key, version)
            return None
        return evaluate(student, task, heldout, target)

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
        comparisons, agreements = switch.policy_live_agreement(
            self.store, state, self.settings.live_window
        )
        rolled_back = switch.rolled_back_versions(self.store, task.key, task.version)
        change = decide_mode_change(
            state.mode,
            heldout,
            LiveEvidence(comparisons, agreements),
            SwitchKnobs.from_settings(self.settings, task_target(state, self.settings)),
            promotable=state.serving_version not in rolled_back,
        )
        if change is None:
            return []
        self.store.set_mode(task.key, change.to_mode, change.reason, change.evidence, task.version)
        return [WorkerAction(task.key, f"mode {state.mode} -> {change.to_mode}", change.reason)]
