"""The shipped fake teacher on its own (no gateway), through its ASGI app."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from gateway_support import label_fn, sentiment_format

from understudy.testing.fake_teacher import FakeTeacher


def _request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "good!"}],
        "response_format": sentiment_format(),
        **extra,
    }


def test_error_rate_is_seeded() -> None:
    def statuses(seed: int) -> list[int]:
        client = TestClient(FakeTeacher(label_fn, error_rate=0.5, seed=seed).create_app())
        return [client.post("/v1/chat/completions", json=_request()).status_code for _ in range(20)]

    first = statuses(3)
    assert first == statuses(3)
    assert set(first) == {200, 500}


def test_logprobs_cover_every_enum_value() -> None:
    teacher = FakeTeacher(label_fn, logprobs=True)
    completion = teacher.completion(_request(logprobs=True))
    tokens = completion["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == completion["choices"][0]["message"]["content"]
    [sentiment] = [t for t in tokens if t["token"] == "positive"]
    assert {alt["token"] for alt in sentiment["top_logprobs"]} == {
        "negative",
        "neutral",
        "positive",
    }
    assert max(sentiment["top_logprobs"], key=lambda alt: alt["logprob"])["token"] == "positive"


def test_stream_chunks_reassemble_to_the_completion() -> None:
    teacher = FakeTeacher(label_fn)
    chunks = list(teacher.chunks(_request(stream_options={"include_usage": True})))
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert json.loads(content) == {"sentiment": "positive", "sarcastic": True}
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_fault_knobs() -> None:
    teacher = FakeTeacher(label_fn, fail_status=503)
    client = TestClient(teacher.create_app())
    failed = client.post("/v1/chat/completions", json=_request())
    assert failed.status_code == 503 and "error" in failed.json()
    teacher.fail_status, teacher.malformed = None, True
    assert client.post("/v1/chat/completions", json=_request()).text == '{"choices": ['
    assert len(teacher.requests) == 2
