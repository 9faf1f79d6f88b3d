"""``/admin/tasks``: every task's routing state as JSON, and the manual override of it.

What the dashboard's task page and ``understudy mode`` / ``tune`` do, for scripts: ``GET`` lists
the newest version of every task (or one task) with its mode, threshold, target agreement, audit
rate and serving student; ``PATCH`` changes any of mode, threshold, target agreement and audit
rate, with a required reason that goes into the task's audit log (one event per change, as the
dashboard records them). Needs an admin key once keys exist (``understudy keys create --role
admin``).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from understudy.errors import InvalidRequest
from understudy.gateway.body import read_json_object, validated
from understudy.gateway.state import settings_of, store_of
from understudy.gateway.student_path import students_of
from understudy.routing.modes import Mode
from understudy.routing.overrides import (
    check_audit_rate,
    check_target_agreement,
    check_threshold,
    task_audit_rate,
    task_target,
)
from understudy.settings import Settings
from understudy.store.records import TaskState

router = APIRouter(prefix="/admin")


class TaskStateOut(BaseModel):
    """A task's routing state. ``target_agreement`` and ``audit_rate`` are the values in force
    (``*_is_default``: the settings' value, the task has none of its own); a null ``threshold``
    means the cascade answers nothing."""

    task: str
    version: int
    mode: Mode
    threshold: float | None
    target_agreement: float
    target_agreement_is_default: bool
    audit_rate: float
    audit_rate_is_default: bool
    serving_version: str | None


class TaskChangeIn(BaseModel):
    """A manual change: any of the four knobs (null clears the threshold, or a target or audit
    rate back to the settings'), and why."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1)
    mode: Mode | None = None
    threshold: float | None = None
    target_agreement: float | None = None
    audit_rate: float | None = None


@router.get("/tasks")
async def list_tasks(request: Request) -> list[TaskStateOut]:
    """Every task's newest version, by key."""
    store, settings = store_of(request), settings_of(request)
    latest = await anyio.to_thread.run_sync(store.latest_tasks)
    return sorted((_state_out(state, settings) for _, state in latest), key=lambda out: out.task)


@router.get("/tasks/{key}")
async def get_task(request: Request, key: str, version: int | None = None) -> TaskStateOut:
    """One task's newest version (or ``?version=N``); 404 ``unknown_task`` when there is none."""
    store = store_of(request)
    state = await anyio.to_thread.run_sync(store.task_state, key, version)
    return _state_out(state, settings_of(request))


@router.patch("/tasks/{key}")
async def change_task(request: Request, key: str, version: int | None = None) -> TaskStateOut:
    """Apply a manual change to a task's newest version (or ``?version=N``: an older schema's
    callers are still answered by its own student); returns its state afterwards."""
    _, payload = await read_json_object(request, settings_of(request).max_body_bytes)
    change = validated(TaskChangeIn, payload)
    if not change.reason.strip():
        raise InvalidRequest(
            "a reason is required; it goes into the task's audit log", param="reason"
        )
    given = change.model_fields_set - {"reason"}
    if not given:
        raise InvalidRequest(
            "nothing to change: give mode, threshold, target_agreement or audit_rate"
        )
    knobs: dict[str, Any] = {}
    if "threshold" in given:
        knobs["threshold"] = check_threshold(change.threshold)
    if "target_agreement" in given:
        knobs["target_agreement"] = check_target_agreement(change.target_agreement)
    if "audit_rate" in given:
        knobs["audit_rate"] = check_audit_rate(change.audit_rate)
    if "mode" in given and change.mode is None:
        raise InvalidRequest("mode cannot be null", param="mode")
    store = store_of(request)
    reason = f"{change.reason} (api)"

    def apply() -> TaskState:
        state = store.task_state(key, version)
        if knobs:
            state = store.update_task_state(key, reason=reason, version=state.version, **knobs)
        if change.mode is not None and change.mode is not state.mode:
            state = store.set_mode(
                key, change.mode, reason, evidence={"via": "api"}, version=state.version
            )
        return state

    state = await anyio.to_thread.run_sync(apply)
    students_of(request).forget_state(key, state.version)  # in force from this gateway's next call
    return _state_out(state, settings_of(request))


def _state_out(state: TaskState, settings: Settings) -> TaskStateOut:
    return TaskStateOut(
        task=state.key,
        version=state.version,
        mode=state.mode,
        threshold=state.threshold,
        target_agreement=task_target(state, settings),
        target_agreement_is_default=state.target_agreement is None,
        audit_rate=task_audit_rate(state, settings),
        audit_rate_is_default=state.audit_rate is None,
        serving_version=state.serving_version,
    )
