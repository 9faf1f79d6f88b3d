"""The student side of a classification call: asking the serving student, answering with it,
and the background work that keeps it honest (audits and shadow comparisons).

``ask_student`` is called by the chat router's ``route``; ``answer_with_student`` renders and logs
the student's answer; ``audit_in_background`` sends a sample of student-answered calls to the
teacher after the client has its answer, and records whether the two agreed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from understudy.errors import UpstreamError
from understudy.gateway.answers import soft_labels
from understudy.gateway.state import (
    call_log_of,
    redactor_of,
    settings_of,
    store_of,
    upstream_of,
)
from understudy.gateway.student_response import (
    render_completion,
    render_stream,
    student_model_name,
)
from understudy.gateway.students import ServingStudent, StudentPool
from understudy.privacy import for_storage
from understudy.routing import AnsweredBy, Mode, Route, RoutingPolicy, decide_route
from understudy.routing.overrides import task_audit_rate
from understudy.store import CallKind, CallRecord, Store, switch
from understudy.tasks import AnswerVia, Prediction, Task, answer_object, parse_labels

logger = logging.getLogger(__name__)

ANSWERED_BY_HEADER = "x-understudy-answered-by"
CONFIDENCE_HEADER = "x-understudy-confidence"
TASK_KEY_HEADER = "x-understudy-task"
DEGRADED_HEADER = "x-understudy-degraded"
UPSTREAM_PATH = "/chat/completions"


@dataclass(frozen=True)
class StudentOpinion:
    """The serving student's prediction for a call (None when it failed)."""

    version: str
    prediction: Prediction | None


@dataclass(frozen=True)
class ClassificationCall:
    """What the student path needs of a classification call (see ``gateway.chat.ChatCall``)."""

    request_id: str
    payload: dict[str, Any]
    task: Task
    via: AnswerVia
    user_text: str
    input_text: str
    started: float


@dataclass(frozen=True)
class Routed:
    """The routing outcome: the decision and, when a student predicted, its opinion."""

    route: Route
    serving: ServingStudent | None = None
    opinion: StudentOpinion | None = None


def students_of(request: Request) -> StudentPool:
    """The gateway's pool of serving students."""
    pool: StudentPool = request.app.state.students
    return pool


def spawn(request: Request, work: Coroutine[Any, Any, None], name: str) -> None:
    """Run background work after the response, keeping a reference until it finishes (a task
    that is only referenced by the event loop may be garbage collected mid-flight)."""
    tasks: set[asyncio.Task[None]] = request.app.state.background
    task = asyncio.get_running_loop().create_task(work, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _predict(serving: ServingStudent, text: str) -> StudentOpinion:
    try:
        prediction: Prediction | None = await serving.batcher.predict(text)
    except Exception:
        # The teacher is always there to answer instead; a failing student only loses this vote.
        logger.exception("student %s failed to predict", serving.version)
        prediction = None
    return StudentOpinion(serving.version, prediction)


async def route_call(
    request: Request, task: Task, input_text: str, rng: random.Random
) -> tuple[Routed, asyncio.Task[StudentOpinion] | None]:
    """Decide who answers a classification call.

    In cascade and student modes the student predicts first (its confidence decides). In shadow
    mode the teacher answers and the student's prediction runs alongside, returned as a pending
    task so it adds no latency; the call's log entry waits for it.
    """
    pool = students_of(request)
    state = await pool.state(task)
    if state.mode is Mode.TEACHER or not task.student_can_answer:
        return Routed(Route(AnsweredBy.TEACHER)), None
    serving = await pool.current(state)
    if serving is None:
        return Routed(Route(AnsweredBy.TEACHER)), None
    if state.mode is Mode.SHADOW:
        pending = asyncio.get_running_loop().create_task(_predict(serving, input_text))
        return Routed(Route(AnsweredBy.TEACHER, compare=True), serving), pending
    opinion = await _predict(serving, input_text)
    audit_rate = task_audit_rate(state, settings_of(request))
    policy = RoutingPolicy(state.mode, state.threshold, audit_rate)
    return Routed(decide_route(policy, opinion.prediction, rng), serving, opinion), None


def comparison_fields(
    opinion: StudentOpinion | None, teacher_labels: dict[str, str]
) -> dict[str, Any]:
    """CallRecord fields that log the student's opinion beside the teacher's answer."""
    if opinion is None or opinion.prediction is None:
        return {}
    student = opinion.prediction.labels
    return {
        "student_labels": student,
        "student_version": opinion.version,
        "confidence": opinion.prediction.confidence,
        "agreed": switch.agree(student, teacher_labels) if teacher_labels else None,
    }


def header_value(text: str) -> str:
    """``text`` as a valid HTTP header value: characters outside printable ASCII (a task key
    comes from the caller's schema name and may hold anything) are percent-encoded."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else quote(c, safe="") for c in text)


def classification_headers(task: Task, answered_by: AnsweredBy) -> dict[str, str]:
    """Headers every classification answer carries (read by clients and the metrics)."""
    return {ANSWERED_BY_HEADER: answered_by.value, TASK_KEY_HEADER: header_value(task.key)}


async def answer_with_student(
    request: Request,
    call: ClassificationCall,
    serving: ServingStudent,
    prediction: Prediction,
    *,
    degraded: bool = False,
) -> Response:
    """Answer a call with the student's prediction, logged before the response leaves."""
    request_id, payload, task, via = call.request_id, call.payload, call.task, call.via
    model = student_model_name(task.key, serving.version)
    completion_id = f"chatcmpl-{request_id}"
    completion = render_completion(payload, via, task.heads, prediction, model, completion_id)
    stream = payload.get("stream") is True
    record = CallRecord(
        id=request_id,
        kind=CallKind.CLASSIFICATION,
        request=payload,
        response=completion,
        status_code=200,
        task=task,
        stream=stream,
        user_text=call.user_text,
        input_text=call.input_text,
        labels=dict(prediction.labels),
        answered_by=AnsweredBy.STUDENT.value,
        student_version=serving.version,
        confidence=prediction.confidence,
        teacher_model=None,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        prompt_tokens=0,
        completion_tokens=0,
        error="teacher unavailable: answered by the student (degraded)" if degraded else None,
    )
    call_log_of(request).submit(for_storage(redactor_of(request), record))
    headers = classification_headers(task, AnsweredBy.STUDENT)
    headers[CONFIDENCE_HEADER] = f"{prediction.confidence:.4f}"
    if degraded:
        headers[DEGRADED_HEADER] = "true"
        logger.warning("task %s: teacher down, call %s answered by student", task.key, request_id)
    if stream:
        chunks = render_stream(payload, via, task.heads, prediction, model, completion_id)
        return StreamingResponse(iter(chunks), headers=headers, media_type="text/event-stream")
    return JSONResponse(completion, headers=headers)


async def audit_in_background(request: Request, call: ClassificationCall) -> None:
    """Ask the teacher the same question after the student answered; record their agreement.
    Skipped (and counted) while ``max_concurrent_audits`` audits are in flight."""
    request_id, task, payload = call.request_id, call.task, call.payload
    state = request.app.state
    if state.audits_in_flight >= settings_of(request).max_concurrent_audits:
        logger.debug("audit of call %s skipped: too many audits in flight", request_id)
        state.metrics.audits_skipped.labels(task=task.key).inc()
        return
    store: Store = store_of(request)
    upstream = upstream_of(request)
    body = {k: v for k, v in payload.items() if k not in ("stream", "stream_options")}
    headers = upstream.headers(request.headers)

    async def audit() -> None:
        try:
            await send_audit()
        finally:
            state.audits_in_flight -= 1

    async def send_audit() -> None:
        try:
            response = await upstream.send(
                "POST", UPSTREAM_PATH, headers, json.dumps(body).encode(), stream=False
            )
            raw = await response.aread()
            await response.aclose()
            if response.status_code != 200:
                raise UpstreamError(f"audit answered HTTP {response.status_code}")
            answer = json.loads(raw)
        except (UpstreamError, ValueError) as error:
            logger.warning("audit of call %s failed: %s", request_id, error)
            return
        labels = parse_labels(task.heads, answer_object(answer))
        if not labels:
            logger.warning("audit of call %s: the teacher's answer had no labels", request_id)
            return
        agreed = await anyio.to_thread.run_sync(
            lambda: switch.record_audit(
                store,
                request_id,
                labels,
                teacher_model=answer.get("model"),
                soft_labels=soft_labels(task.heads, answer),
            )
        )
        logger.debug("audit of call %s: agreed=%s", request_id, agreed)

    state.audits_in_flight += 1
    spawn(request, audit(), name=f"audit-{request_id}")
