"""A fake teacher: an OpenAI-compatible chat-completions server answering from a labelling
function, for tests, demos and benchmarks (no network, no real LLM).

Usage::

    teacher = FakeTeacher(lambda schema, text: {"sentiment": "positive" if "good" in text
                                                else "negative"})
    with run_fake_teacher(teacher) as base_url:      # e.g. http://127.0.0.1:41234/v1
        client = openai.OpenAI(base_url=base_url, api_key="x")

What it serves:

- ``POST /v1/chat/completions``. With ``response_format`` ``json_schema`` (or a single forced
  function call) it calls ``label_fn(schema, text)`` with the object schema and the user text
  (all user messages joined by a blank line) and answers the returned object as JSON content
  (or as the tool call's arguments). Any other call gets the content ``"echo: <text>"``.
  ``stream=true`` answers as server-sent ``chat.completion.chunk`` events ending in ``[DONE]``
  (with a usage chunk when ``stream_options.include_usage``).
- ``logprobs=true`` (with ``FakeTeacher(logprobs=True)``): ``choices[0].logprobs.content`` lists
  the answer's tokens; every enum or boolean value is one token whose ``top_logprobs`` hold each
  allowed value with a seeded, random probability that favours the chosen one.
- ``GET /v1/models``: one model, ``model``.

Fault knobs (attributes; change them while the server runs): ``latency_ms`` (delay before each
answer, in ms), ``error_rate`` (probability of a 500, seeded), ``fail_status`` (answer every chat
call with this HTTP status), ``malformed`` (answer 200 with a body that is not JSON),
``fail_next`` (answer the next N chat calls with ``fail_next_status``, then normally),
``retry_after_s`` (a ``Retry-After`` header on every error answer), ``reset_connections``
(drop the connection after the status line, so the caller sees it break mid-answer).
``requests`` holds the chat request bodies received (the newest 10,000), ``headers`` their
request headers.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from understudy.tasks import AnswerVia, detect_task, heads_from_schema, user_text
from understudy.testing.server import serve_in_thread

LabelFn = Callable[[dict[str, Any], str], dict[str, Any]]
"""``label_fn(schema, text) -> answer object`` (JSON-serialisable, matching the schema)."""

# Chat requests kept in ``FakeTeacher.requests`` (the newest), so long demos stay bounded.
MAX_RECORDED_REQUESTS = 10_000
# Characters per streamed content chunk: small enough that an answer spans several chunks.
STREAM_CHUNK_CHARS = 8


def _error(status: int, message: str, error_type: str = "server_error") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": error_type, "code": None, "param": None}},
        status_code=status,
    )


def _count_tokens(text: str) -> int:
    """A rough token count (words and punctuation), good enough for usage numbers."""
    return len(re.findall(r"\w+|[^\w\s]", text))


class FakeTeacher:
    """An OpenAI-compatible teacher whose answers come from ``label_fn`` (see module docs)."""

    def __init__(
        self,
        label_fn: LabelFn,
        *,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
        logprobs: bool = False,
        model: str = "fake-teacher",
        fail_status: int | None = None,
        malformed: bool = False,
        fail_next: int = 0,
        fail_next_status: int = 503,
        retry_after_s: float | None = None,
        reset_connections: bool = False,
    ) -> None:
        self.label_fn = label_fn
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.logprobs = logprobs
        self.model = model
        self.fail_status = fail_status
        self.malformed = malformed
        self.fail_next = fail_next
        self.fail_next_status = fail_next_status
        self.retry_after_s = retry_after_s
        self.reset_connections = reset_connections
        self.headers: deque[dict[str, str]] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    # --- answers ---------------------------------------------------------------------------

    def answer(self, request: dict[str, Any]) -> tuple[str, AnswerVia | None, dict[str, Any]]:
        """``(content, via, schema)`` for a request: the JSON answer of a classification call
        (via set) or an echo of the user text (via None, empty schema)."""
        text = user_text(request.get("messages"))
        spec = detect_task(request)
        if spec is None:
            return f"echo: {text}", None, {}
        answer = self.label_fn(spec.schema, text)
        return json.dumps(answer), spec.via, spec.schema

    def _logprobs(self, content: str, schema: dict[str, Any]) -> dict[str, Any]:
        """Token logprobs for a JSON answer: each label value is one token (see module docs)."""
        heads, _, _ = heads_from_schema(schema)
        answer = json.loads(content)
        tokens: list[dict[str, Any]] = []
        cursor = 0
        for head in heads:
            if head.name not in answer:
                continue
            value_text = json.dumps(answer[head.name]).strip('"')
            match = re.search(rf'"{re.escape(head.name)}":\s*"?', content[cursor:])
            if match is None:
                continue
            start = cursor + match.end()
            if start > cursor:
                tokens.append(_token(content[cursor:start], 0.0))
            with self._lock:
                top_p = self._rng.uniform(0.55, 0.999)
            others = [label for label in head.labels if label != value_text]
            top = [_token(value_text, math.log(top_p))]
            top += [_token(label, math.log((1 - top_p) / len(others))) for label in others]
            tokens.append({**top[0], "top_logprobs": top})
            cursor = start + len(value_text)
        if cursor < len(content):
            tokens.append(_token(content[cursor:], 0.0))
        for token in tokens:
            token.setdefault("top_logprobs", [])
        return {"content": tokens, "refusal": None}

    def _message(self, content: str, via: AnswerVia | None, request: dict[str, Any]) -> Any:
        if via is AnswerVia.TOOL:
            name = _forced_name(request)
            call: dict[str, Any] = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function"}
            call["function"] = {"name": name, "arguments": content}
            return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        return {"role": "assistant", "content": content, "refusal": None}

    def completion(self, request: dict[str, Any]) -> dict[str, Any]:
        """The complete ``chat.completion`` object for a request."""
        content, via, schema = self.answer(request)
        choice: dict[str, Any] = {
            "index": 0,
            "message": self._message(content, via, request),
            "finish_reason": "tool_calls" if via is AnswerVia.TOOL else "stop",
            "logprobs": None,
        }
        if self.logprobs and request.get("logprobs") and via is AnswerVia.RESPONSE_FORMAT:
            choice["logprobs"] = self._logprobs(content, schema)
        prompt = "\n".join(
            str(m.get("content", "")) for m in request.get("messages", []) if isinstance(m, dict)
        )
        prompt_tokens, completion_tokens = _count_tokens(prompt), _count_tokens(content)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }

    def chunks(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The same completion as ``chat.completion.chunk`` objects, in order."""
        full = self.completion(request)
        base = {
            "id": full["id"],
            "object": "chat.completion.chunk",
            "created": full["created"],
            "model": full["model"],
            "system_fingerprint": full["system_fingerprint"],
        }
        choice = full["choices"][0]
        message = choice["message"]
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            head: dict[str, Any] = {"index": 0, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            yield {**base, "choices": [_delta({"role": "assistant", "tool_calls": [head]})]}
            arguments = call["function"]["arguments"]
            for i in range(0, len(arguments), STREAM_CHUNK_CHARS):
                piece = {
                    "index": 0,
                    "function": {"arguments": arguments[i : i + STREAM_CHUNK_CHARS]},
                }
                yield {**base, "choices": [_delta({"tool_calls": [piece]})]}
        else:
            yield {**base, "choices": [_delta({"role": "assistant", "content": ""})]}
            content = message["content"]
            tokens = (choice["logprobs"] or {}).get("content")
            if tokens:  # one chunk per token, each with its logprobs
                for token in tokens:
                    delta = _delta({"content": token["token"]})
                    delta["logprobs"] = {"content": [token], "refusal": None}
                    yield {**base, "choices": [delta]}
            else:
                for i in range(0, len(content), STREAM_CHUNK_CHARS):
                    yield {
                        **base,
                        "choices": [_delta({"content": content[i : i + STREAM_CHUNK_CHARS]})],
                    }
        yield {**base, "choices": [_delta({}, choice["finish_reason"])]}
        options = request.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            yield {**base, "choices": [], "usage": full["usage"]}

    # --- HTTP ------------------------------------------------------------------------------

    def _fault(self) -> Response | None:
        if self.reset_connections:
            return StreamingResponse(_broken_body(), media_type="application/json")
        with self._lock:
            failing_next = self.fail_next > 0
            self.fail_next = max(0, self.fail_next - 1)
        if failing_next:
            return self._with_retry_after(
                _error(self.fail_next_status, "fake teacher: injected failure (fail_next)")
            )
        if self.fail_status is not None:
            return self._with_retry_after(
                _error(self.fail_status, f"fake teacher configured to fail with {self.fail_status}")
            )
        with self._lock:
            failed = self._rng.random() < self.error_rate
        if failed:
            return self._with_retry_after(_error(500, "fake teacher: injected random failure"))
        if self.malformed:
            return Response(b'{"choices": [', media_type="application/json")
        return None

    def _with_retry_after(self, response: Response) -> Response:
        if self.retry_after_s is not None:
            response.headers["retry-after"] = f"{self.retry_after_s:g}"
        return response

    def create_app(self) -> FastAPI:
        """The teacher's ASGI app."""
        app = FastAPI(title="understudy fake teacher")

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
            except json.JSONDecodeError:
                return _error(400, "body is not JSON", "invalid_request_error")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return _error(400, "messages is required", "invalid_request_error")
            with self._lock:
                self.requests.append(body)
                self.headers.append(dict(request.headers))
            if self.latency_ms > 0:
                await asyncio.sleep(self.latency_ms / 1000)
            fault = self._fault()
            if fault is not None:
                return fault
            if body.get("stream"):
                return StreamingResponse(self._sse(body), media_type="text/event-stream")
            return JSONResponse(self.completion(body))

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            model = {"id": self.model, "object": "model", "created": 0, "owned_by": "understudy"}
            return {"object": "list", "data": [model]}

        return app

    async def _sse(self, request: dict[str, Any]) -> AsyncIterator[bytes]:
        for chunk in self.chunks(request):
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"


async def _broken_body() -> AsyncIterator[bytes]:
    """A response body that breaks off: the server drops the connection mid-answer."""
    yield b'{"id": '
    raise ConnectionResetError("fake teacher: connection reset (reset_connections)")


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


def _forced_name(request: dict[str, Any]) -> str:
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name", ""))
    tools = request.get("tools")
    function = tools[0].get("function") if isinstance(tools, list) and tools else None
    return str(function.get("name", "")) if isinstance(function, dict) else ""


@contextmanager
def run_fake_teacher(teacher: FakeTeacher) -> Iterator[str]:
    """Serve ``teacher`` on a free localhost port; yields its base URL (ending in ``/v1``)."""
    with serve_in_thread(teacher.create_app()) as root:
        yield f"{root}/v1"
