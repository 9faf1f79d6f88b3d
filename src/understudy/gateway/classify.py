"""``POST /v1/classify``: ask a task's serving student directly, without the OpenAI shape.

Body: ``{"task": key, "text": "..."}`` or ``{"task": key, "texts": ["...", ...]}``. Each text is
answered by the task's serving student (whatever the task's mode: the caller asked for the
student) and logged as a call, so it can be reviewed and labelled like any other. ``confident``
says whether the student's confidence clears the task's cascade threshold.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from understudy.errors import InvalidRequest, ModelError, NoStudent
from understudy.gateway.body import read_json_object, validated
from understudy.gateway.state import (
    call_log_of,
    redactor_of,
    request_id_of,
    settings_of,
    store_of,
)
from understudy.gateway.student_path import classification_headers, students_of
from understudy.privacy import for_storage
from understudy.routing import AnsweredBy
from understudy.store import CallKind, CallRecord
from understudy.tasks import Prediction

router = APIRouter()


class ClassifyIn(BaseModel):
    """One text or a batch of texts for a task's student."""

    task: str = Field(min_length=1)
    text: str | None = None
    texts: list[str] | None = None

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> ClassifyIn:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        if self.texts is not None and not self.texts:
            raise ValueError("'texts' must not be empty")
        return self

    @property
    def batch(self) -> list[str]:
        """The texts to classify, in order."""
        return [self.text] if self.text is not None else list(self.texts or [])


def _result(request_id: str, prediction: Prediction, threshold: float | None) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "labels": prediction.labels,
        "probabilities": prediction.probs,
        "confidence": prediction.confidence,
        "confident": threshold is not None and prediction.confidence >= threshold,
    }


@router.post("/v1/classify")
async def classify(request: Request) -> JSONResponse:
    """Labels and calibrated probabilities for each text from the task's serving student."""
    settings = settings_of(request)
    _, payload = await read_json_object(request, settings.max_body_bytes)
    body = validated(ClassifyIn, payload)
    texts = body.batch
    if len(texts) > settings.classify_max_texts:
        raise InvalidRequest(
            f"{len(texts)} texts is more than the limit of {settings.classify_max_texts}",
            param="texts",
        )
    store = store_of(request)
    started = time.perf_counter()
    task = await anyio.to_thread.run_sync(store.get_task, body.task)
    pool = students_of(request)
    state = await pool.state(task)
    serving = await pool.wait_loaded(state)
    if serving is None and state.serving_version is not None:
        raise ModelError(
            f"task {task.key!r}: its student {state.serving_version} could not be loaded (see "
            "the gateway's log); the gateway tries again every minute"
        )
    if serving is None:
        raise NoStudent(
            f"task {task.key!r} has no serving student yet; it is still learning from the "
            "teacher (see `understudy task` for its progress)",
            param="task",
        )
    if len(texts) == 1:
        predictions = [await serving.batcher.predict(texts[0])]
    else:
        predictions = await anyio.to_thread.run_sync(serving.student.predict, texts)
    latency_ms = (time.perf_counter() - started) * 1000 / len(texts)
    base_id = request_id_of(request)
    ids = [base_id] if len(texts) == 1 else [f"{base_id}-{i}" for i in range(len(texts))]
    records = [
        CallRecord(
            id=call_id,
            kind=CallKind.CLASSIFY,
            request={"task": task.key, "text": text},
            response=None,
            status_code=200,
            task=task,
            user_text=text,
            input_text=text,
            labels=dict(prediction.labels),
            answered_by=AnsweredBy.STUDENT.value,
            student_version=serving.version,
            confidence=prediction.confidence,
            latency_ms=latency_ms,
            prompt_tokens=0,
            completion_tokens=0,
        )
        for call_id, text, prediction in zip(ids, texts, predictions, strict=True)
    ]

    call_log, redactor = call_log_of(request), redactor_of(request)
    for record in records:
        call_log.submit(for_storage(redactor, record))
    content = {
        "task": task.key,
        "task_version": task.version,
        "student_version": serving.version,
        "mode": state.mode.value,
        "threshold": state.threshold,
        "results": [
            _result(call_id, prediction, state.threshold)
            for call_id, prediction in zip(ids, predictions, strict=True)
        ],
    }
    return JSONResponse(content, headers=classification_headers(task, AnsweredBy.STUDENT))
