"""A student's prediction rendered as OpenAI completions: whole, streamed, and as a tool call."""

from __future__ import annotations

import json
from typing import Any

from understudy.gateway.student_response import render_completion, render_stream
from understudy.tasks import AnswerVia, Head, HeadKind, Prediction

HEADS = (
    Head("sentiment", ("negative", "positive")),
    Head("toxic", ("false", "true"), HeadKind.BOOL),
)
PREDICTION = Prediction(
    labels={"sentiment": "positive", "toxic": "false"},
    probs={"sentiment": {"negative": 0.1, "positive": 0.9}, "toxic": {"false": 0.8, "true": 0.2}},
)
TOOL_REQUEST: dict[str, Any] = {
    "tools": [{"type": "function", "function": {"name": "classify", "parameters": {}}}],
    "tool_choice": {"type": "function", "function": {"name": "classify"}},
    "stream_options": {"include_usage": True},
}


def events(chunks: list[bytes]) -> list[Any]:
    data = [c.decode().removeprefix("data: ").strip() for c in chunks]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_whole_completion_has_typed_values_and_zero_usage() -> None:
    body = render_completion({}, AnswerVia.RESPONSE_FORMAT, HEADS, PREDICTION, "m", "id1")
    message = body["choices"][0]["message"]
    assert json.loads(message["content"]) == {"sentiment": "positive", "toxic": False}
    assert body["usage"]["total_tokens"] == 0 and body["model"] == "m"


def test_streamed_tool_call_ends_with_usage_when_asked() -> None:
    chunks = events(
        list(render_stream(TOOL_REQUEST, AnswerVia.TOOL, HEADS, PREDICTION, "m", "id2"))
    )
    call = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["function"]["name"] == "classify"
    assert json.loads(call["function"]["arguments"]) == {"sentiment": "positive", "toxic": False}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 0
    assert {c["id"] for c in chunks} == {"id2"}
