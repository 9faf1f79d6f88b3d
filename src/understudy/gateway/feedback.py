"""``POST /v1/feedback``: a person's labels for a logged call, validated against its task."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from understudy.gateway.body import read_json_object, validated
from understudy.gateway.state import settings_of, store_of
from understudy.tasks import LabelSource

router = APIRouter()

AUTHOR_HEADER = "x-understudy-user"


class FeedbackIn(BaseModel):
    """The feedback body: the call's request id and a JSON value per label field."""

    request_id: str = Field(min_length=1)
    labels: dict[str, Any]
    author: str | None = None


class FeedbackOut(BaseModel):
    """What was stored: the labels per head, as label strings."""

    request_id: str
    task: str
    task_version: int
    labels: dict[str, str]
    source: str


@router.post("/v1/feedback")
async def feedback(request: Request) -> FeedbackOut:
    """Store human labels for a logged classification call (they override the teacher's)."""
    _, payload = await read_json_object(request, settings_of(request).max_body_bytes)
    body = validated(FeedbackIn, payload)
    store = store_of(request)
    author = body.author or request.headers.get(AUTHOR_HEADER)

    def store_labels() -> FeedbackOut:
        stored = store.add_labels(
            body.request_id, body.labels, source=LabelSource.HUMAN, author=author
        )
        call = store.get_call(body.request_id)
        return FeedbackOut(
            request_id=body.request_id,
            task=str(call.task_key),
            task_version=int(call.task_version or 0),
            labels=stored,
            source=LabelSource.HUMAN.value,
        )

    return await anyio.to_thread.run_sync(store_labels)
