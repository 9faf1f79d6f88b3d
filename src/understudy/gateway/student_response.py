"""A student's prediction rendered as an OpenAI chat completion (whole or streamed).

The client cannot tell from the shape who answered: the JSON content (or the forced tool call's
arguments) holds exactly the schema's label fields with schema-valid values, the ``model`` field
names the student version, and usage reports zero upstream tokens.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from understudy.tasks import AnswerVia, Head, Prediction

ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def student_model_name(task_key: str, version: str) -> str:
    """The ``model`` field of a student's completion, e.g. ``understudy/sentiment@3``."""
    return f"understudy/{task_key}@{version}"


def answer_json(heads: tuple[Head, ...], prediction: Prediction) -> str:
    """The answer object as compact JSON, fields in schema order, values typed per head."""
    answer = {head.name: head.json_value(prediction.labels[head.name]) for head in heads}
    return json.dumps(answer, separators=(",", ":"))


def forced_function_name(request: dict[str, Any]) -> str:
    """Name of the function a tool-call classification request forces."""
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name", ""))
    tools = request.get("tools") or [{}]
    return str(tools[0].get("function", {}).get("name", ""))


def _message(request: dict[str, Any], via: AnswerVia, content: str) -> dict[str, Any]:
    if via is AnswerVia.TOOL:
        call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": forced_function_name(request), "arguments": content},
        }
        return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    return {"role": "assistant", "content": content, "refusal": None}


def render_completion(
    request: dict[str, Any],
    via: AnswerVia,
    heads: tuple[Head, ...],
    prediction: Prediction,
    model: str,
    completion_id: str,
) -> dict[str, Any]:
    """A complete ``chat.completion`` object carrying the student's answer."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _message(request, via, answer_json(heads, prediction)),
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": dict(ZERO_USAGE),
        "system_fingerprint": None,
    }


def render_stream(
    request: dict[str, Any],
    via: AnswerVia,
    heads: tuple[Head, ...],
    prediction: Prediction,
    model: str,
    completion_id: str,
) -> Iterator[bytes]:
    """The same answer as server-sent ``chat.completion.chunk`` events, ending with ``[DONE]``."""
    created = int(time.time())
    content = answer_json(heads, prediction)

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        return event([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])

    if via is AnswerVia.TOOL:
        call = _message(request, via, content)["tool_calls"][0]
        yield chunk(
            {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}, None
        )
    else:
        yield chunk({"role": "assistant", "content": ""}, None)
        yield chunk({"content": content}, None)
    yield chunk({}, "stop")
    stream_options = request.get("stream_options")
    if isinstance(stream_options, dict) and stream_options.get("include_usage"):
        yield event([], usage=dict(ZERO_USAGE))
    yield b"data: [DONE]\n\n"
