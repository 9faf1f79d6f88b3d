"""Bad input, upstream faults and human feedback, all answered in OpenAI's error format."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from gateway_support import MAX_BODY_BYTES, sentiment_format

from understudy.settings import Settings
from understudy.store import Store
from understudy.tasks import LabelSource
from understudy.testing.fake_teacher import FakeTeacher
from understudy.testing.gateway import run_gateway


@pytest.fixture(scope="module")
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url, api_key="k", max_retries=0)


@pytest.fixture(scope="module")
def http(gateway_url: str) -> httpx.Client:
    return httpx.Client(base_url=gateway_url, timeout=10)


def _error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "code"} <= set(body["error"])
    assert response.headers["x-understudy-request-id"].startswith("us-")
    return dict(body["error"])


def _classify(client: openai.OpenAI, text: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-x",
        messages=[{"role": "user", "content": text}],
        response_format=sentiment_format(),
    )
    return raw.headers["x-understudy-request-id"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (b'{"model": "m"}', 400, "messages"),
        (b'{"model": "m", "messages": ["hi"]}', 400, "messages"),
    ],
)
def test_malformed_requests(
    http: httpx.Client, body: bytes, status: int, param: str | None
) -> None:
    response = http.post(
        "/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    error = _error_of(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_oversize_body_is_413(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x" * MAX_BODY_BYTES}]
        )
    assert info.value.status_code == 413
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "payload_too_large"

    def chunks() -> Any:  # no Content-Length: the limit must hold while reading
        for _ in range(MAX_BODY_BYTES // 1000 + 1):
            yield b" " * 1000

    response = http.post("/chat/completions", content=chunks())
    assert response.status_code == 413 and _error_of(response)["code"] == "payload_too_large"


def test_unknown_route_and_method(http: httpx.Client) -> None:
    missing = http.get("/nowhere")
    assert missing.status_code == 404 and _error_of(missing)["code"] == "not_found"
    wrong = http.get("/chat/completions")
    assert wrong.status_code == 405 and _error_of(wrong)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ({"fail_status": 500}, 502, "upstream_error"),
        ({"fail_status": 503}, 502, "upstream_error"),
        ({"malformed": True}, 502, "upstream_error"),
    ],
)
def test_upstream_failures_become_502_and_are_logged(
    teacher: FakeTeacher,
    client: openai.OpenAI,
    store: Store,
    fault: dict[str, Any],
    status: int,
    code: str,
) -> None:
    for name, value in fault.items():
        setattr(teacher, name, value)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.with_raw_response.create(
            model="m",
            messages=[{"role": "user", "content": "good"}],
            response_format=sentiment_format(),
        )
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["code"] == code
    call = store.get_call(info.value.response.headers["x-understudy-request-id"])
    assert call.status_code == status and call.error and call.labels is None


def test_upstream_client_errors_pass_through_unchanged(
    teacher: FakeTeacher, client: openai.OpenAI, store: Store
) -> None:
    teacher.fail_status = 429
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert "configured to fail with 429" in str(info.value.body)
    call = store.get_call(info.value.response.headers["x-understudy-request-id"])
    assert call.status_code == 429


def test_upstream_timeout_is_504(teacher: FakeTeacher, teacher_url: str, tmp_path: Any) -> None:
    teacher.latency_ms = 500
    settings = Settings(upstream_base_url=teacher_url, upstream_timeout_s=0.1, data_dir=tmp_path)
    with run_gateway(settings) as url:
        client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 504
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "upstream_timeout"


def test_unreachable_upstream_is_502(tmp_path: Any) -> None:
    settings = Settings(upstream_base_url="http://127.0.0.1:9/v1", data_dir=tmp_path)
    with run_gateway(settings) as url:
        client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 502
        with pytest.raises(openai.APIStatusError) as models:
            client.models.list()
        assert models.value.status_code == 502


def test_feedback_round_trip(client: openai.OpenAI, http: httpx.Client, store: Store) -> None:
    request_id = _classify(client, "good")
    response = http.post(
        "/feedback",
        json={"request_id": request_id, "labels": {"sentiment": "negative", "sarcastic": True}},
        headers={"x-understudy-user": "ana"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "request_id": request_id,
        "task": "sentiment",
        "task_version": 1,
        "labels": {"sentiment": "negative", "sarcastic": "true"},
        "source": "human",
    }
    [example] = [e for e in store.examples("sentiment") if e.call_id == request_id]
    assert example.labels == {"sentiment": "negative", "sarcastic": "true"}
    assert example.source is LabelSource.HUMAN


@pytest.mark.parametrize(
    ("labels", "status", "param"),
    [
        ({"mood": "happy"}, 400, "labels.mood"),
        ({"sentiment": "ecstatic"}, 400, "labels.sentiment"),
        ({"sarcastic": "sometimes"}, 400, "labels.sarcastic"),
    ],
)
def test_feedback_validation(
    client: openai.OpenAI, http: httpx.Client, labels: dict[str, Any], status: int, param: str
) -> None:
    request_id = _classify(client, "bad")
    response = http.post("/feedback", json={"request_id": request_id, "labels": labels})
    assert response.status_code == status
    error = _error_of(response)
    assert error["param"] == param
    assert error["message"]


def test_feedback_for_unknown_or_unlabelled_calls(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    unknown = http.post("/feedback", json={"request_id": "us-nope", "labels": {"sentiment": "x"}})
    assert unknown.status_code == 404 and _error_of(unknown)["code"] == "unknown_request"
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    passthrough = http.post(
        "/feedback",
        json={"request_id": raw.headers["x-understudy-request-id"], "labels": {"a": "b"}},
    )
    assert passthrough.status_code == 400
    missing = http.post("/feedback", json={"labels": {}})
    assert missing.status_code == 400 and _error_of(missing)["param"] == "request_id"


def test_stream_abandoned_by_client_is_still_logged(
    teacher: FakeTeacher, gateway_url: str, store: Store
) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "good, abandoned"}],
        "response_format": sentiment_format(),
        "stream": True,
    }
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", f"{gateway_url}/chat/completions", json=body) as response,
    ):
        request_id = response.headers["x-understudy-request-id"]
        next(response.iter_raw())  # read one piece, then hang up
    deadline = time.monotonic() + 10
    while True:
        try:
            call = store.get_call(request_id)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    assert call.labels == {"sentiment": "positive", "sarcastic": "false"}


def test_too_many_messages_is_400(fresh_settings: Settings) -> None:
    limited = fresh_settings.model_copy(update={"max_messages": 3})
    with run_gateway(limited) as url:
        for count, status in ((3, 200), (4, 400)):
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}] * count}
            response = httpx.post(f"{url}/chat/completions", json=body)
            assert response.status_code == status, response.text
    error = _error_of(response)
    assert error["param"] == "messages" and "at most 3" in error["message"]
