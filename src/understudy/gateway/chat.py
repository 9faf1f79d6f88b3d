"""``POST /v1/chat/completions``: the OpenAI-compatible entry point of every call.

A call is parsed, its task detected (``understudy.tasks.detect_task``) and its student input
extracted; ``route`` then decides who answers. The teacher path forwards the request unchanged
to the upstream, logs the call (journaled before the response leaves, see
``understudy.store.call_log``; for a stream, before its final ``[DONE]`` event) and returns the
upstream's answer unchanged. Calls that are not classification calls take the same path without
a task.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import anyio
import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from understudy.errors import InvalidRequest, UpstreamError
from understudy.gateway.answers import (
    DONE_DATA,
    SseEvent,
    StreamAssembler,
    soft_labels,
    sse_batches,
    usage_tokens,
)
from understudy.gateway.body import parse_json, read_json_object
from understudy.gateway.state import (
    call_log_of,
    redactor_of,
    request_id_of,
    settings_of,
    store_of,
    upstream_of,
)
from understudy.gateway.student_path import (
    ClassificationCall,
    StudentOpinion,
    answer_with_student,
    audit_in_background,
    classification_headers,
    comparison_fields,
    route_call,
)
from understudy.gateway.upstream import returned_headers, upstream_failure
from understudy.privacy import Redactor, for_storage
from understudy.routing.decide import AnsweredBy
from understudy.store import CallKind, CallRecord, Store
from understudy.store.call_log import CallLog
from understudy.tasks import (
    TASK_HEADER,
    AnswerVia,
    LabelSource,
    Task,
    TaskSpec,
    answer_object,
    detect_task,
    extract_input,
    parse_labels,
    user_text,
)

logger = logging.getLogger(__name__)
router = APIRouter()

UPSTREAM_PATH = "/chat/completions"
# Audit sampling only needs to be unpredictable, not reproducible.
_audit_rng = random.Random()


@dataclass(frozen=True)
class ChatCall:
    """One chat-completion call as the gateway sees it.

    ``body`` is the raw request, forwarded byte for byte. ``task`` is None for calls that are not
    classification calls. ``input_text`` is what a student reads (the user text with the task's
    template stripped). ``started`` is ``time.perf_counter()`` when the body was read.
    ``opinion`` is the serving student's prediction when it made one (``pending_opinion`` while it
    still runs beside the teacher in shadow mode); it is logged next to the teacher's answer.
    ``redactor`` (when redaction is on) rewrites the log entry, never what is forwarded.
    """

    request_id: str
    body: bytes
    payload: dict[str, Any]
    stream: bool
    upstream_headers: dict[str, str]
    task: Task | None
    via: AnswerVia | None
    user_text: str
    input_text: str
    started: float
    opinion: StudentOpinion | None = None
    pending_opinion: asyncio.Task[StudentOpinion] | None = None
    redactor: Redactor | None = None


def _validate(payload: dict[str, Any], max_messages: int) -> None:
    """The checks the OpenAI API makes first, so obviously bad calls never reach the teacher."""
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    if len(messages) > max_messages:
        raise InvalidRequest(
            f"'messages' holds {len(messages)} messages; at most {max_messages} are accepted",
            param="messages",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a 'role'", param="messages")


def _resolve(store: Store, spec: TaskSpec, text: str) -> tuple[Task, str]:
    """Register (or find) the task version and strip its learned template from ``text``."""
    task = store.register_task(spec)
    prefix, suffix = store.template(task)
    return task, extract_input(text, prefix, suffix)


async def _prepare(request: Request, body: bytes, payload: dict[str, Any]) -> ChatCall:
    started = time.perf_counter()
    spec = detect_task(payload, request.headers.get(TASK_HEADER))
    text = user_text(payload["messages"])
    task, input_text = None, text
    if spec is not None:
        store = store_of(request)
        task = store.cached_task(spec)
        template = store.cached_template(task) if task is not None else None
        if task is not None and template is not None:  # the common case: no database read
            input_text = extract_input(text, *template)
        else:
            task, input_text = await anyio.to_thread.run_sync(_resolve, store, spec, text)
    return ChatCall(
        request_id=request_id_of(request),
        body=body,
        payload=payload,
        stream=payload.get("stream") is True,
        upstream_headers=upstream_of(request).headers(request.headers),
        task=task,
        via=spec.via if spec is not None else None,
        user_text=text,
        input_text=input_text,
        started=started,
        redactor=redactor_of(request),
    )


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """Answer an OpenAI chat-completion request (see the module docstring)."""
    settings = settings_of(request)
    body, payload = await read_json_object(request, settings.max_body_bytes)
    _validate(payload, settings.max_messages)
    call = await _prepare(request, body, payload)
    if call.task is None or call.via is None:  # not a classification call: pass through
        return await answer_with_teacher(request, call)
    task, via = call.task, call.via
    routed, pending = await route_call(request, task, call.input_text, _audit_rng)
    call = replace(call, opinion=routed.opinion, pending_opinion=pending)
    prediction = routed.opinion.prediction if routed.opinion is not None else None
    classification = ClassificationCall(
        call.request_id,
        call.payload,
        task,
        via,
        call.user_text,
        call.input_text,
        call.started,
    )
    if routed.route.answered_by is AnsweredBy.STUDENT and routed.serving and prediction:
        response = await answer_with_student(request, classification, routed.serving, prediction)
        if routed.route.audit:
            await audit_in_background(request, classification)
        return response
    # A student trusted with part of the traffic stands in when the teacher is down.
    stand_in = prediction if routed.serving is not None else None
    try:
        return await answer_with_teacher(request, call, log_failure=stand_in is None)
    except UpstreamError:
        if stand_in is None or routed.serving is None:
            raise
        return await answer_with_student(
            request, classification, routed.serving, stand_in, degraded=True
        )


# --- the teacher path ----------------------------------------------------------------------


def _record(
    call: ChatCall,
    *,
    response: dict[str, Any] | None,
    status_code: int,
    error: str | None = None,
) -> CallRecord:
    """The log entry for a call the upstream answered (or failed to)."""
    labels: dict[str, str] = {}
    soft = None
    if call.task is not None and status_code == 200 and response is not None:
        labels = parse_labels(call.task.heads, answer_object(response))
        soft = soft_labels(call.task.heads, response)
    prompt_tokens, completion_tokens = usage_tokens(response)
    model = (response or {}).get("model") or call.payload.get("model")
    comparison = comparison_fields(call.opinion, labels) if status_code == 200 else {}
    record = CallRecord(
        id=call.request_id,
        kind=CallKind.CLASSIFICATION if call.task is not None else CallKind.PASSTHROUGH,
        request=call.payload,
        response=response,
        status_code=status_code,
        task=call.task,
        stream=call.stream,
        user_text=call.user_text,
        input_text=call.input_text,
        labels=labels or None,
        label_source=LabelSource.TEACHER if labels else None,
        soft_labels=soft,
        answered_by=AnsweredBy.TEACHER.value if status_code < 500 else None,
        teacher_model=str(model) if model is not None else None,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=error,
        **comparison,
    )
    return for_storage(call.redactor, record)


async def _settled(call: ChatCall) -> ChatCall:
    """The call with its shadow prediction (if one runs beside the teacher) finished."""
    if call.pending_opinion is None:
        return call
    return replace(call, opinion=await call.pending_opinion, pending_opinion=None)


def _json_or_none(raw: bytes) -> dict[str, Any] | None:
    parsed = parse_json(raw)  # lone surrogates repaired, so the answer can be stored
    return parsed if isinstance(parsed, dict) else None


async def _finish_whole(
    request: Request,
    call: ChatCall,
    upstream_response: httpx.Response,
    raw: bytes,
    *,
    log_failure: bool = True,
) -> Response:
    """Log a complete (non-streamed) upstream answer and return it unchanged; 5xx and
    unreadable answers become 502 (logged only with ``log_failure``)."""
    call_log = call_log_of(request)
    status = upstream_response.status_code
    parsed = _json_or_none(raw)
    failure: UpstreamError | None = None
    if status >= 500:
        failure = upstream_failure(upstream_response, raw)
    elif status == 200 and parsed is None:
        failure = UpstreamError("upstream answered 200 with a body that is not a JSON object")
    if failure is not None:
        if log_failure:
            record = _record(
                call, response=parsed, status_code=failure.status_code, error=failure.message
            )
            call_log.submit(record)
        raise failure
    call_log.submit(_record(await _settled(call), response=parsed, status_code=status))
    headers = returned_headers(upstream_response)
    if call.task is not None and status == 200:
        headers.update(classification_headers(call.task, AnsweredBy.TEACHER))
    return Response(
        content=raw,
        status_code=status,
        headers=headers,
        media_type=upstream_response.headers.get("content-type", "application/json"),
    )


async def answer_with_teacher(
    request: Request, call: ChatCall, *, log_failure: bool = True
) -> Response:
    """Forward the call to the upstream, log it, and return the upstream's answer unchanged.

    With ``log_failure`` False a failed upstream (unreachable, 5xx or unreadable) is not logged
    here, because the caller answers (and logs) the call another way.
    """
    call_log = call_log_of(request)
    try:
        upstream_response = await upstream_of(request).send(
            "POST", UPSTREAM_PATH, call.upstream_headers, call.body, stream=call.stream
        )
    except UpstreamError as exc:
        if log_failure:
            record = _record(call, response=None, status_code=exc.status_code, error=exc.message)
            call_log.submit(record)
        raise
    if not call.stream or upstream_response.status_code != 200:
        try:
            raw = await upstream_response.aread()
        finally:
            await upstream_response.aclose()
        return await _finish_whole(request, call, upstream_response, raw, log_failure=log_failure)
    headers = returned_headers(upstream_response)
    if call.task is not None:
        headers.update(classification_headers(call.task, AnsweredBy.TEACHER))
    return _RelayResponse(
        _relay(call_log, call, upstream_response), headers=headers, media_type="text/event-stream"
    )


class _RelayResponse(StreamingResponse):
    """A streaming response that always closes its generator, so ``_relay`` logs the call even
    when the client hangs up while the generator waits at a ``yield`` (Starlette leaves it
    suspended then)."""

    def __init__(self, relay: AsyncGenerator[bytes, None], **kwargs: Any) -> None:
        super().__init__(relay, **kwargs)
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._relay.aclose()


async def _relay(
    call_log: CallLog, call: ChatCall, upstream: httpx.Response
) -> AsyncGenerator[bytes, None]:
    """Forward server-sent events as they arrive; log the assembled answer after the last one.

    The final ``[DONE]`` event is held back until the call is journaled. When the client goes
    away mid-stream, the rest of the teacher's answer is still read and logged (shielded from
    cancellation), because it is a paid-for label.
    """
    assembler = StreamAssembler()
    batches = sse_batches(upstream.aiter_bytes())
    done: SseEvent | None = None
    error: str | None = None
    try:
        async for batch in batches:
            forward: list[bytes] = []
            for event in batch:
                if event.data.strip() == DONE_DATA:
                    done = event
                    break
                assembler.feed(event.data)
                forward.append(event.raw)
            if forward:  # events that arrived together leave together: one write, not several
                yield b"".join(forward)
            if done is not None:
                break
    except httpx.HTTPError as exc:
        error = f"upstream stream broke: {type(exc).__name__}: {exc}"
        logger.warning("%s (%s)", error, call.request_id)
    except BaseException:
        error = "client disconnected"
        with anyio.CancelScope(shield=True):
            await _drain(batches, assembler)
        raise
    finally:
        # Shielded: a client hanging up cancels this task, and the call must still be logged.
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
            call = await _settled(call)
            record = _record(call, response=assembler.completion(), status_code=200, error=error)
            call_log.submit(record)
    if done is not None:
        yield done.raw


async def _drain(batches: AsyncIterator[list[SseEvent]], assembler: StreamAssembler) -> None:
    """Read the rest of an upstream stream into ``assembler`` (best effort)."""
    try:
        async for batch in batches:
            for event in batch:
                if event.data.strip() == DONE_DATA:
                    return
                assembler.feed(event.data)
    except httpx.HTTPError as exc:
        logger.warning("upstream stream broke while draining: %s", exc)
