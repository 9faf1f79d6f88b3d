"""Store queries of the switch loop: live agreement, audits, and recovery of training runs.

Functions over a ``Store`` (one short transaction each), kept apart from the general repository
because only the gateway's routing and the worker use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa

from understudy.processes import ProcessRef
from understudy.routing.modes import ROLLBACK, Mode
from understudy.store import tables as t
from understudy.store.records import TaskState
from understudy.store.repository import Store
from understudy.tasks import LabelSource


def agree(student: Mapping[str, str], teacher: Mapping[str, str]) -> bool:
    """Whether the student's labels match the teacher's on every head the teacher answered."""
    return bool(teacher) and all(student.get(head) == label for head, label in teacher.items())


def record_audit(
    store: Store,
    call_id: str,
    teacher_labels: Mapping[str, str],
    *,
    teacher_model: str | None,
    soft_labels: Mapping[str, Mapping[str, float]] | None = None,
) -> bool:
    """Attach the teacher's answer to a call the student answered; returns whether they agreed.

    The teacher's labels become training labels of the call, like any teacher answer.
    """
    with store.engine.begin() as conn:
        call = conn.execute(
            sa.select(t.calls.c.task_id, t.calls.c.labels).where(t.calls.c.id == call_id)
        ).one()
        agreed = agree(call.labels or {}, teacher_labels)
        conn.execute(
            t.calls.update()
            .where(t.calls.c.id == call_id)
            .values(
                student_labels=call.labels,
                agreed=agreed,
                soft_labels=dict(soft_labels) if soft_labels else None,
            )
        )
        now = t.utcnow()
        conn.execute(
            t.labels.insert(),
            [
                {
                    "call_id": call_id,
                    "task_id": call.task_id,
                    "head": head,
                    "value": value,
                    "source": LabelSource.TEACHER.value,
                    "author": teacher_model,
                    "created_at": now,
                }
                for head, value in teacher_labels.items()
            ],
        )
    return agreed


def live_agreement(
    store: Store,
    task_key: str,
    task_version: int,
    *,
    student_version: str | None,
    answered_by_student: bool,
    since: datetime | None,
    window: int,
) -> tuple[int, int]:
    """(comparisons, agreements) over the newest ``window`` calls where both sides answered.

    With ``answered_by_student`` only audited calls the student answered count (what the cascade
    actually serves); otherwise every call the serving student predicted on (shadow mode).
    """
    with store.engine.connect() as conn:
        task_id = conn.execute(
            sa.select(t.tasks.c.id).where(
                t.tasks.c.key == task_key, t.tasks.c.version == task_version
            )
        ).scalar_one()
        recent = sa.select(t.calls.c.agreed).where(
            t.calls.c.task_id == task_id,
            t.calls.c.agreed.is_not(None),
            t.calls.c.student_version == student_version,
        )
        if answered_by_student:
            recent = recent.where(t.calls.c.answered_by == "student")
        if since is not None:
            recent = recent.where(t.calls.c.created_at > since)
        sub = recent.order_by(t.calls.c.created_at.desc()).limit(window).subquery()
        row = conn.execute(
            sa.select(
                sa.func.count(), sa.func.coalesce(sa.func.sum(sa.cast(sub.c.agreed, sa.Integer)), 0)
            )
        ).one()
    return int(row[0]), int(row[1])


def policy_live_agreement(store: Store, state: TaskState, window: int) -> tuple[int, int]:
    """(comparisons, agreements) the switch policy judges a task by: its serving student's, since
    the task's last mode change, the newest ``window``; in cascade and student mode only the
    audited calls the student answered, in shadow every call it predicted on."""
    return live_agreement(
        store,
        state.key,
        state.version,
        student_version=state.serving_version,
        answered_by_student=state.mode is not Mode.SHADOW,
        since=last_mode_change(store, state.key, state.version),
        window=window,
    )


def last_mode_change(store: Store, task_key: str, task_version: int) -> datetime | None:
    """When the task version last changed mode (None if never)."""
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.max(t.events.c.created_at))
            .select_from(t.events.join(t.tasks, t.events.c.task_id == t.tasks.c.id))
            .where(
                t.tasks.c.key == task_key,
                t.tasks.c.version == task_version,
                t.events.c.kind == "mode",
            )
        ).scalar_one_or_none()


def rolled_back_versions(store: Store, task_key: str, task_version: int) -> set[str]:
    """Student versions that a rollback took out of service (they may not be promoted again)."""
    rollbacks = {(old.value, new.value) for old, new in ROLLBACK.items()}
    versions = set()
    for event in store.events(task_key, limit=10_000):
        if event.kind != "mode" or event.task_version != task_version:
            continue
        if (event.from_mode, event.to_mode) in rollbacks and event.evidence:
            heldout = event.evidence.get("heldout") or {}
            if heldout.get("version") is not None:
                versions.add(str(heldout["version"]))
    return versions


ABANDONED_RUN_ERROR = (
    "the process training it stopped without finishing it (killed, crashed or out of memory)"
)


def _abandoned(metrics: Mapping[str, object] | None, commands_only: bool) -> bool:
    started_by = ProcessRef.from_json((metrics or {}).get("started_by"))
    if started_by is None:  # the worker's: abandoned when another worker takes the lock
        return not commands_only
    return not started_by.may_be_alive()


class AbandonedRun(NamedTuple):
    """A training run that a worker left ``running`` when it died."""

    id: int
    task_key: str
    kind: str


def interrupt_running_runs(store: Store, *, commands_only: bool = False) -> list[AbandonedRun]:
    """Mark runs left ``running`` by a worker that died as ``interrupted``, with
    ``abandoned: true`` and ``ABANDONED_RUN_ERROR`` added to their metrics; returns them.

    Runs a command trains (``started_by``: ``understudy train``) are left alone while their
    process may be alive, and marked like the worker's once it has exited. ``commands_only``
    (what each worker pass does) marks only those.
    """
    runs = t.student_runs
    with store.engine.begin() as conn:
        rows = [
            row
            for row in conn.execute(
                sa.select(runs.c.id, runs.c.kind, runs.c.metrics, t.tasks.c.key)
                .join(t.tasks, runs.c.task_id == t.tasks.c.id)
                .where(runs.c.status == "running")
            ).all()
            if _abandoned(row.metrics, commands_only)
        ]
        for row in rows:
            conn.execute(
                runs.update()
                .where(runs.c.id == row.id, runs.c.status == "running")
                .values(
                    status="interrupted",
                    finished_at=t.utcnow(),
                    metrics={
                        **(row.metrics or {}),
                        "abandoned": True,
                        "error": ABANDONED_RUN_ERROR,
                    },
                )
            )
    return [AbandonedRun(row.id, row.key, row.kind) for row in rows]
