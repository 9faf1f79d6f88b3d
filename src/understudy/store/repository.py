"""The store's repository: every read and write of understudy's database goes through ``Store``.

Each method is one short transaction, safe to call from several threads at once (async handlers
call it through ``anyio.to_thread``). Task lookups are cached in memory because the gateway
resolves the task of every classification call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from understudy.errors import InvalidRequest, UnknownRequest, UnknownTask
from understudy.processes import ProcessRef
from understudy.routing.modes import Mode
from understudy.store import tables as t
from understudy.store.pending import without_waiting_for_calls
from understudy.store.records import (
    CallKind,
    CallRecord,
    CallRow,
    EventRow,
    StudentRun,
    TaskRow,
    TaskState,
)
from understudy.tasks import (
    Example,
    Head,
    HeadKind,
    LabelSource,
    Task,
    TaskSpec,
    extract_input,
)
from understudy.templates import learn_template

logger = logging.getLogger(__name__)

# Which label wins when several sources labelled the same head of the same call.
_SOURCE_RANK = {LabelSource.TEACHER: 0, LabelSource.IMPORT: 1, LabelSource.HUMAN: 2}
_UNSET: Any = object()


def _newest_version_of_each_key() -> sa.Subquery:
    return (
        sa.select(t.tasks.c.key, sa.func.max(t.tasks.c.version).label("version"))
        .group_by(t.tasks.c.key)
        .subquery()
    )


def _newest_task_versions() -> sa.Select[Any]:
    newest = _newest_version_of_each_key()
    return (
        sa.select(t.tasks)
        .join(newest, sa.and_(t.tasks.c.key == newest.c.key, t.tasks.c.version == newest.c.version))
        .order_by(t.tasks.c.key)
    )


def _older_answering_task_versions() -> sa.Select[Any]:
    newest = _newest_version_of_each_key()
    return (
        sa.select(t.tasks)
        .join(newest, t.tasks.c.key == newest.c.key)
        .where(
            t.tasks.c.version < newest.c.version,
            t.tasks.c.mode.in_([Mode.CASCADE.value, Mode.STUDENT.value]),
        )
        .order_by(t.tasks.c.key, t.tasks.c.version)
    )


NEWEST_TASK_VERSIONS = _newest_task_versions()
"""Rows of the ``tasks`` table for the newest version of each key, by key."""
OLDER_ANSWERING_TASK_VERSIONS = _older_answering_task_versions()
"""Rows of older task versions in cascade or student mode, by key and version."""


def is_heldout(call_id: str, fraction: float) -> bool:
    """Whether a call belongs to the held-out split: a fixed function of its id, in [0, 1)."""
    digest = hashlib.sha256(call_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _heads_json(heads: tuple[Head, ...]) -> list[dict[str, Any]]:
    return [{"name": h.name, "labels": list(h.labels), "kind": h.kind.value} for h in heads]


def _task_of(row: Row[Any]) -> Task:
    heads = tuple(
        Head(name=h["name"], labels=tuple(h["labels"]), kind=HeadKind(h["kind"])) for h in row.heads
    )
    return Task(
        key=row.key,
        version=row.version,
        schema=row.schema,
        heads=heads,
        free_text_fields=tuple(row.free_text_fields),
        required_free_text_fields=tuple(row.required_free_text),
    )


_CALLS_WITH_TASK = sa.select(t.calls, t.tasks.c.key, t.tasks.c.version).select_from(
    t.calls.outerjoin(t.tasks, t.calls.c.task_id == t.tasks.c.id)
)


def _call_of(row: Row[Any]) -> CallRow:
    return CallRow(
        id=row.id,
        kind=CallKind(row.kind),
        task_key=row.key,
        task_version=row.version,
        stream=row.stream,
        request=row.request,
        response=row.response,
        status_code=row.status_code,
        user_text=row.user_text,
        input_text=row.input_text,
        labels=row.labels,
        soft_labels=row.soft_labels,
        answered_by=row.answered_by,
        student_version=row.student_version,
        confidence=row.confidence,
        teacher_model=row.teacher_model,
        latency_ms=row.latency_ms,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        error=row.error,
        heldout=row.heldout,
        created_at=row.created_at,
        student_labels=row.student_labels,
        agreed=row.agreed,
    )


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the row an INSERT created."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no primary key for an insert")
    return int(key[0])


def _state_of(row: Row[Any]) -> TaskState:
    return TaskState(
        key=row.key,
        version=row.version,
        mode=Mode(row.mode),
        threshold=row.threshold,
        target_agreement=row.target_agreement,
        audit_rate=row.audit_rate,
        serving_version=row.serving_version,
        template_prefix=row.template_prefix,
        template_suffix=row.template_suffix,
    )


class Store:
    """Repository over one SQLAlchemy engine. Build it with ``understudy.store.open_store``."""

    def __init__(
        self, engine: Engine, *, heldout_fraction: float = 0.2, template_min_calls: int = 20
    ) -> None:
        self.engine = engine
        self.heldout_fraction = heldout_fraction
        self.template_min_calls = template_min_calls
        self._lock = threading.Lock()
        self._by_fingerprint: dict[tuple[str, str], Task] = {}
        self._ids: dict[tuple[str, int], int] = {}
        self._templates: dict[int, tuple[str, str]] = {}  # learned templates by task id

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    # --- tasks -----------------------------------------------------------------------------

    def register_task(self, spec: TaskSpec) -> Task:
        """The task version for a detected spec: the existing one when a version with the same
        schema exists, else a new version (starting in shadow mode)."""
        cache_key = (spec.key, spec.fingerprint)
        cached = self._by_fingerprint.get(cache_key)
        if cached is not None:
            return cached
        for _ in range(3):
            try:
                task = self._register(spec)
                break
            except sa.exc.IntegrityError:
                # Another thread or replica inserted the same version first; read theirs.
                continue
        else:
            raise InvalidRequest(f"could not register task {spec.key!r}")
        with self._lock:
            self._by_fingerprint[cache_key] = task
        return task

    def _register(self, spec: TaskSpec) -> Task:
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(t.tasks).where(t.tasks.c.key == spec.key).order_by(t.tasks.c.version)
            ).all()
            for row in rows:
                if row.fingerprint == spec.fingerprint:
                    self._remember_id(row)
                    return _task_of(row)
            version = rows[-1].version + 1 if rows else 1
            inserted = conn.execute(
                t.tasks.insert().values(
                    key=spec.key,
                    version=version,
                    fingerprint=spec.fingerprint,
                    via=spec.via.value,
                    schema=spec.schema,
                    heads=_heads_json(spec.heads),
                    free_text_fields=list(spec.free_text_fields),
                    required_free_text=list(spec.required_free_text_fields),
                    mode=Mode.SHADOW.value,
                    created_at=t.utcnow(),
                )
            )
            task_id = _inserted_id(inserted)
            reason = "first seen" if version == 1 else f"schema changed (was version {version - 1})"
            conn.execute(
                t.events.insert().values(
                    task_id=task_id,
                    kind="task_registered",
                    to_mode=Mode.SHADOW.value,
                    reason=reason,
                    evidence={"fingerprint": spec.fingerprint},
                    created_at=t.utcnow(),
                )
            )
        logger.info("registered task %s version %d (%s)", spec.key, version, reason)
        with self._lock:
            self._ids[(spec.key, version)] = int(task_id)
        return Task(
            key=spec.key,
            version=version,
            schema=spec.schema,
            heads=spec.heads,
            free_text_fields=spec.free_text_fields,
            required_free_text_fields=spec.required_free_text_fields,
        )

    def _remember_id(self, row: Row[Any]) -> None:
        with self._lock:
            self._ids[(row.key, row.version)] = int(row.id)

    def _task_row(self, conn: Connection, key: str, version: int | None) -> Row[Any]:
        query = sa.select(t.tasks).where(t.tasks.c.key == key)
        if version is not None:
            query = query.where(t.tasks.c.version == version)
        row = conn.execute(query.order_by(t.tasks.c.version.desc()).limit(1)).first()
        if row is None:
            suffix = f" version {version}" if version is not None else ""
            raise UnknownTask(f"no task {key!r}{suffix} is registered", param="task")
        self._remember_id(row)
        return row

    def _task_id(self, conn: Connection, task: Task) -> int:
        cached = self._ids.get((task.key, task.version))
        return (
            cached if cached is not None else int(self._task_row(conn, task.key, task.version).id)
        )

    def get_task(self, key: str, version: int | None = None) -> Task:
        """A registered task version (the latest by default); raises ``UnknownTask``."""
        with self.engine.connect() as conn:
            return _task_of(self._task_row(conn, key, version))

    def list_tasks(self) -> list[TaskRow]:
        """Every task version, newest first, with call and labelled-call counts."""
        with self.engine.connect() as conn:
            call_counts: dict[int, int] = dict(
                conn.execute(
                    sa.select(t.calls.c.task_id, sa.func.count()).group_by(t.calls.c.task_id)
                ).all()
            )
            labelled: dict[int, int] = dict(
                conn.execute(
                    sa.select(
                        t.labels.c.task_id, sa.func.count(sa.distinct(t.labels.c.call_id))
                    ).group_by(t.labels.c.task_id)
                ).all()
            )
            rows = conn.execute(
                sa.select(t.tasks).order_by(t.tasks.c.key, t.tasks.c.version.desc())
            ).all()
        return [
            TaskRow(
                task=_task_of(row),
                state=_state_of(row),
                calls=int(call_counts.get(row.id, 0)),
                labelled=int(labelled.get(row.id, 0)),
                created_at=row.created_at,
            )
            for row in rows
        ]

    def latest_tasks(self) -> list[tuple[Task, TaskState]]:
        """The newest version of every task with its state (no counts: cheap to call often)."""
        with self.engine.connect() as conn:
            rows = conn.execute(NEWEST_TASK_VERSIONS).all()
        return [(_task_of(row), _state_of(row)) for row in rows]

    def older_answering_tasks(self, key: str | None = None) -> list[tuple[Task, TaskState]]:
        """Task versions older than their key's newest whose student still answers (cascade or
        student mode): callers on an old schema are answered by that version's student. Every
        key's, or ``key``'s only."""
        query = OLDER_ANSWERING_TASK_VERSIONS
        if key is not None:
            query = query.where(t.tasks.c.key == key)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(_task_of(row), _state_of(row)) for row in rows]

    def cached_task(self, spec: TaskSpec) -> Task | None:
        """The task version for ``spec`` if this process has already resolved it, without
        touching the database (so the gateway can skip a thread hop); else None."""
        return self._by_fingerprint.get((spec.key, spec.fingerprint))

    def cached_template(self, task: Task) -> tuple[str, str] | None:
        """The task's learned template when this store already knows it, else None (not learned
        yet, or learned by another process: ``template`` reads the database)."""
        task_id = self._ids.get((task.key, task.version))
        return None if task_id is None else self._templates.get(task_id)

    def template(self, task: Task) -> tuple[str, str]:
        """The task's learned prompt template ``(prefix, suffix)``; ``("", "")`` until learned."""
        cached = self.cached_template(task)
        if cached is not None:
            return cached
        # Waits for pending calls: committing them is what learns the template.
        with self.engine.connect() as conn:
            task_id = self._task_id(conn, task)
            row = conn.execute(
                sa.select(t.tasks.c.template_prefix, t.tasks.c.template_suffix).where(
                    t.tasks.c.id == task_id
                )
            ).one()
        if row.template_prefix is None:
            return ("", "")
        learned = (row.template_prefix, row.template_suffix)
        with self._lock:
            self._templates[task_id] = learned
        return learned

    def task_state(self, task_key: str, version: int | None = None) -> TaskState:
        """Mode, threshold and serving version of a task (its latest version by default)."""
        with without_waiting_for_calls(), self.engine.connect() as conn:
            return _state_of(self._task_row(conn, task_key, version))

    def set_mode(
        self,
        task_key: str,
        mode: Mode | str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        version: int | None = None,
    ) -> TaskState:
        """Move a task (latest version by default) to ``mode``, recording an event with the
        reason and evidence. Returns the new state."""
        new_mode = Mode(mode)
        with self.engine.begin() as conn:
            row = self._task_row(conn, task_key, version)
            conn.execute(t.tasks.update().where(t.tasks.c.id == row.id).values(mode=new_mode.value))
            self._insert_event(
                conn, row.id, "mode", reason, evidence, from_mode=row.mode, to_mode=new_mode
            )
            updated = conn.execute(sa.select(t.tasks).where(t.tasks.c.id == row.id)).one()
        logger.info("task %s: mode %s -> %s (%s)", task_key, row.mode, new_mode, reason)
        return _state_of(updated)

    def update_task_state(
        self,
        task_key: str,
        *,
        threshold: float | None = _UNSET,
        target_agreement: float | None = _UNSET,
        audit_rate: float | None = _UNSET,
        serving_version: str | None = _UNSET,
        reason: str = "updated",
        version: int | None = None,
    ) -> TaskState:
        """Change a task's routing knobs (only the arguments given), recording a ``state`` event
        whose evidence lists the changes."""
        changes = {
            name: value
            for name, value in {
                "threshold": threshold,
                "target_agreement": target_agreement,
                "audit_rate": audit_rate,
                "serving_version": serving_version,
            }.items()
            if value is not _UNSET
        }
        with self.engine.begin() as conn:
            row = self._task_row(conn, task_key, version)
            if changes:
                conn.execute(t.tasks.update().where(t.tasks.c.id == row.id).values(**changes))
                self._insert_event(conn, row.id, "state", reason, changes)
            updated = conn.execute(sa.select(t.tasks).where(t.tasks.c.id == row.id)).one()
        return _state_of(updated)

    # --- events and student runs -------------------------------------------------------------

    def _insert_event(
        self,
        conn: Connection,
        task_id: int | None,
        kind: str,
        reason: str | None,
        evidence: Mapping[str, Any] | None,
        *,
        from_mode: str | None = None,
        to_mode: str | None = None,
    ) -> None:
        conn.execute(
            t.events.insert().values(
                task_id=task_id,
                kind=kind,
                from_mode=from_mode,
                to_mode=to_mode,
                reason=reason,
                evidence=dict(evidence) if evidence is not None else None,
                created_at=t.utcnow(),
            )
        )

    def record_event(
        self,
        task_key: str | None,
        kind: str,
        reason: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        *,
        from_mode: str | None = None,
        to_mode: str | None = None,
    ) -> None:
        """Append an event to a task's log (``task_key`` None for a global event)."""
        with self.engine.begin() as conn:
            task_id = None if task_key is None else self._task_row(conn, task_key, None).id
            self._insert_event(
                conn, task_id, kind, reason, evidence, from_mode=from_mode, to_mode=to_mode
            )

    def events(self, task_key: str | None = None, limit: int = 100) -> list[EventRow]:
        """The newest events first, of one task (all its versions) or of everything."""
        query = (
            sa.select(t.events, t.tasks.c.key, t.tasks.c.version)
            .select_from(t.events.outerjoin(t.tasks, t.events.c.task_id == t.tasks.c.id))
            .order_by(t.events.c.id.desc())
            .limit(limit)
        )
        if task_key is not None:
            query = query.where(t.tasks.c.key == task_key)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            EventRow(
                id=r.id,
                task_key=r.key,
                task_version=r.version,
                kind=r.kind,
                from_mode=r.from_mode,
                to_mode=r.to_mode,
                reason=r.reason,
                evidence=r.evidence,
                created_at=r.created_at,
            )
            for r in rows
        ]

    def start_student_run(
        self,
        task: Task,
        kind: str,
        train_size: int | None = None,
        *,
        started_by: ProcessRef | None = None,
    ) -> int:
        """Log the start of a training run; returns the run id for ``finish_student_run``.

        Its metrics keep, until it finishes, the labelled calls it starts from (``train_size``)
        and the process training it when that is not the worker (``started_by``: a worker taking
        the worker lock leaves such a run alone while that process may be alive).
        """
        started: dict[str, Any] = {}
        if train_size is not None:
            started["train_size"] = train_size
        if started_by is not None:
            started["started_by"] = started_by.to_json()
        with self.engine.begin() as conn:
            result = conn.execute(
                t.student_runs.insert().values(
                    task_id=self._task_id(conn, task),
                    kind=kind,
                    status="running",
                    started_at=t.utcnow(),
                    metrics=started or None,
                )
            )
        return _inserted_id(result)

    def finish_student_run(
        self,
        run_id: int,
        status: str,
        *,
        version: str | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> bool:
        """Close a training run with its outcome (``succeeded``/``failed``/...), artifact version
        and metrics. A run ends once: False (nothing written) when it already had an outcome."""
        with self.engine.begin() as conn:
            closed = conn.execute(
                t.student_runs.update()
                .where(t.student_runs.c.id == run_id, t.student_runs.c.status == "running")
                .values(
                    status=status,
                    version=version,
                    metrics=dict(metrics) if metrics is not None else None,
                    finished_at=t.utcnow(),
                )
            )
        return closed.rowcount == 1

    def student_run_status(self, run_id: int) -> str | None:
        """A training run's status (``running`` until it ends); None for an unknown id."""
        with self.engine.connect() as conn:
            status: str | None = conn.execute(
                sa.select(t.student_runs.c.status).where(t.student_runs.c.id == run_id)
            ).scalar_one_or_none()
        return status

    def student_runs(self, task_key: str) -> list[StudentRun]:
        """A task's training runs (all versions), newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.student_runs, t.tasks.c.key, t.tasks.c.version.label("task_version"))
                .join(t.tasks, t.student_runs.c.task_id == t.tasks.c.id)
                .where(t.tasks.c.key == task_key)
                .order_by(t.student_runs.c.id.desc())
            ).all()
        return [
            StudentRun(
                id=r.id,
                task_key=r.key,
                task_version=r.task_version,
                kind=r.kind,
                status=r.status,
                version=r.version,
                metrics=r.metrics,
                started_at=r.started_at,
                finished_at=r.finished_at,
            )
            for r in rows
        ]

    # --- calls and labels -----------------------------------------------------------------

    def record_call(self, record: CallRecord) -> bool:
        """Log one call, committed when this returns (see ``record_calls``); False when a call
        with its id was already logged (nothing is written then)."""
        return self.record_calls([record], skip_logged=True) == 1

    def record_calls(self, records: Sequence[CallRecord], *, skip_logged: bool = False) -> int:
        """Log calls in one transaction, committed when this returns; returns how many were
        written.

        With ``skip_logged`` calls whose id is already logged are skipped (replaying a journal,
        re-importing a file); without it such a call fails the transaction with an
        ``IntegrityError`` (the gateway's ids are fresh, so it saves the lookup). Labels of a
        teacher or imported answer are stored as training labels; each task's template is
        learned once enough calls exist.
        """
        if not records:
            return 0
        with self.engine.begin() as conn:
            logged: set[str] = set()
            if skip_logged:
                ids = [r.id for r in records]
                logged = set(
                    conn.execute(sa.select(t.calls.c.id).where(t.calls.c.id.in_(ids))).scalars()
                )
            fresh = {r.id: r for r in records if r.id not in logged}.values()
            calls: list[dict[str, Any]] = []
            labels: list[dict[str, Any]] = []
            learning: set[int] = set()
            for record in fresh:
                task_id = None if record.task is None else self._task_id(conn, record.task)
                calls.append(self._call_row(record, task_id))
                source = record.label_source
                if task_id is not None and source is not None and record.labels:
                    labels.extend(
                        {
                            "call_id": record.id,
                            "task_id": task_id,
                            "head": head,
                            "value": value,
                            "source": source.value,
                            "author": record.teacher_model,
                            "created_at": calls[-1]["created_at"],
                        }
                        for head, value in record.labels.items()
                    )
                if task_id is not None and record.user_text is not None:
                    learning.add(task_id)
            # Parameters passed beside the statement (not via .values()) keep SQLAlchemy's
            # compiled-statement cache hot: these inserts run for every gateway call.
            if calls:
                conn.execute(t.calls.insert(), calls)
            if labels:
                conn.execute(t.labels.insert(), labels)
            for task_id in learning:
                self._maybe_learn_template(conn, task_id)
        return len(calls)

    def _call_row(self, record: CallRecord, task_id: int | None) -> dict[str, Any]:
        return {
            "id": record.id,
            "task_id": task_id,
            "kind": record.kind.value,
            "stream": record.stream,
            "request": record.request,
            "response": record.response,
            "status_code": record.status_code,
            "user_text": record.user_text,
            "input_text": record.input_text,
            "labels": record.labels,
            "soft_labels": record.soft_labels,
            "answered_by": record.answered_by,
            "student_version": record.student_version,
            "confidence": record.confidence,
            "teacher_model": record.teacher_model,
            "latency_ms": record.latency_ms,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "error": record.error,
            "heldout": is_heldout(record.id, self.heldout_fraction),
            "created_at": record.created_at or t.utcnow(),
            "student_labels": record.student_labels,
            "agreed": record.agreed,
        }

    def _maybe_learn_template(self, conn: Connection, task_id: int) -> None:
        if task_id in self._templates:
            return
        learned = conn.execute(
            sa.select(t.tasks.c.template_prefix).where(t.tasks.c.id == task_id)
        ).scalar_one()
        if learned is not None:
            return
        texts = (
            conn.execute(
                sa.select(t.calls.c.user_text)
                .where(
                    t.calls.c.task_id == task_id,
                    t.calls.c.user_text.is_not(None),
                    t.calls.c.kind == CallKind.CLASSIFICATION.value,
                )
                .order_by(t.calls.c.created_at)
                .limit(self.template_min_calls)
            )
            .scalars()
            .all()
        )
        if len(texts) < self.template_min_calls:
            return
        prefix, suffix = learn_template(texts)
        conn.execute(
            t.tasks.update()
            .where(t.tasks.c.id == task_id, t.tasks.c.template_prefix.is_(None))
            .values(template_prefix=prefix, template_suffix=suffix)
        )
        self._insert_event(
            conn,
            task_id,
            "template_learned",
            f"learned from {len(texts)} calls",
            {"prefix": prefix, "suffix": suffix},
        )
        logger.info("task id %d: learned template prefix=%r suffix=%r", task_id, prefix, suffix)
        with self._lock:
            self._templates[task_id] = (prefix, suffix)

    def get_call(self, request_id: str) -> CallRow:
        """A logged call by request id; raises ``UnknownRequest``."""
        with self.engine.connect() as conn:
            row = conn.execute(_CALLS_WITH_TASK.where(t.calls.c.id == request_id)).first()
        if row is None:
            raise UnknownRequest(
                f"no logged call has request id {request_id!r}", param="request_id"
            )
        return _call_of(row)

    def recent_calls(self, task_key: str | None = None, limit: int = 50) -> list[CallRow]:
        """The newest logged calls, of one task (all versions) or of everything."""
        query = _CALLS_WITH_TASK.order_by(t.calls.c.created_at.desc()).limit(limit)
        if task_key is not None:
            query = query.where(t.tasks.c.key == task_key)
        with self.engine.connect() as conn:
            return [_call_of(row) for row in conn.execute(query).all()]

    def add_labels(
        self,
        request_id: str,
        labels: Mapping[str, Any],
        *,
        source: LabelSource = LabelSource.HUMAN,
        author: str | None = None,
    ) -> dict[str, str]:
        """Store labels for a logged classification call, validated against its task's schema.

        Values are JSON values as in the task's answer (a string from the enum, or a boolean;
        ``"true"``/``"false"`` are accepted for booleans). Returns the stored labels per head.
        Raises ``UnknownRequest`` for an unknown id and ``InvalidRequest`` for a call without a
        task, an unknown field or a value outside the field's labels.
        """
        call = self.get_call(request_id)
        if call.task_key is None or call.task_version is None:
            raise InvalidRequest(
                f"call {request_id!r} is not a classification call; it has no labels to correct",
                param="request_id",
            )
        if not labels:
            raise InvalidRequest("labels must name at least one field", param="labels")
        task = self.get_task(call.task_key, call.task_version)
        clean: dict[str, str] = {}
        for field, value in labels.items():
            try:
                head = task.head(field)
            except KeyError:
                known = ", ".join(h.name for h in task.heads)
                raise InvalidRequest(
                    f"task {task.key!r} has no label field {field!r} (fields: {known})",
                    param=f"labels.{field}",
                ) from None
            label = head.label_of(value)
            if label is None and head.kind is HeadKind.BOOL and value in head.labels:
                label = str(value)
            if label is None:
                allowed = ", ".join(repr(head.json_value(v)) for v in head.labels)
                raise InvalidRequest(
                    f"{value!r} is not a valid value for {field!r} (allowed: {allowed})",
                    param=f"labels.{field}",
                )
            clean[field] = label
        with self.engine.begin() as conn:
            task_id = self._task_id(conn, task)
            now = t.utcnow()
            conn.execute(
                t.labels.insert(),
                [
                    {
                        "call_id": request_id,
                        "task_id": task_id,
                        "head": head_name,
                        "value": value,
                        "source": source.value,
                        "author": author,
                        "created_at": now,
                    }
                    for head_name, value in clean.items()
                ],
            )
        return clean

    def examples(
        self, task_key: str, version: int | None = None, heldout: bool | None = None
    ) -> list[Example]:
        """One example per labelled call of a task version (latest by default), oldest first.

        Per head, a human label beats an imported one, which beats the teacher's; among labels of
        the same source the newest wins. ``source`` is the strongest source among the winners;
        teacher soft labels are kept for heads the teacher's label won. ``heldout`` filters on
        the call's fixed split (None: both).
        """
        with self.engine.connect() as conn:
            task_row = self._task_row(conn, task_key, version)
            query = (
                sa.select(
                    t.labels.c.call_id,
                    t.labels.c.head,
                    t.labels.c.value,
                    t.labels.c.source,
                    t.calls.c.user_text,
                    t.calls.c.soft_labels,
                )
                .join(t.calls, t.labels.c.call_id == t.calls.c.id)
                .where(t.labels.c.task_id == task_row.id)
                .order_by(t.calls.c.created_at, t.calls.c.id, t.labels.c.id)
            )
            if heldout is not None:
                query = query.where(t.calls.c.heldout == heldout)
            rows = conn.execute(query).all()
        task = _task_of(task_row)
        head_names = {h.name for h in task.heads}
        prefix, suffix = task_row.template_prefix, task_row.template_suffix
        grouped: dict[str, dict[str, tuple[LabelSource, str]]] = {}
        texts: dict[str, str] = {}
        soft: dict[str, dict[str, dict[str, float]] | None] = {}
        for row in rows:
            if row.head not in head_names:
                continue
            source = LabelSource(row.source)
            heads = grouped.setdefault(row.call_id, {})
            current = heads.get(row.head)
            if current is None or _SOURCE_RANK[source] >= _SOURCE_RANK[current[0]]:
                heads[row.head] = (source, row.value)
            texts[row.call_id] = extract_input(row.user_text or "", prefix, suffix)
            soft[row.call_id] = row.soft_labels
        examples = []
        for call_id, heads in grouped.items():
            winner = max((src for src, _ in heads.values()), key=_SOURCE_RANK.__getitem__)
            teacher_soft = soft[call_id] or {}
            soft_labels = {
                head: dist
                for head, dist in teacher_soft.items()
                if head in heads and heads[head][0] is LabelSource.TEACHER
            }
            examples.append(
                Example(
                    text=texts[call_id],
                    labels={head: value for head, (_, value) in heads.items()},
                    source=winner,
                    soft_labels=soft_labels or None,
                    call_id=call_id,
                )
            )
        return examples

    def count_labelled(
        self, task_key: str, version: int | None = None, heldout: bool | None = None
    ) -> int:
        """Number of calls of a task version (latest by default) with at least one label."""
        with self.engine.connect() as conn:
            task_id = self._task_row(conn, task_key, version).id
            query = (
                sa.select(sa.func.count(sa.distinct(t.labels.c.call_id)))
                .select_from(t.labels.join(t.calls, t.labels.c.call_id == t.calls.c.id))
                .where(t.labels.c.task_id == task_id)
            )
            if heldout is not None:
                query = query.where(t.calls.c.heldout == heldout)
            return int(conn.execute(query).scalar_one())
