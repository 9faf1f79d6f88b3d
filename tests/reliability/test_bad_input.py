"""Bad and awkward input through the gateway: Unicode edge cases, empty text and very long
inputs are answered; the teacher gets the request untouched, the store a valid-Unicode copy,
and a student truncates long inputs to its token budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reliability_support import sentiment_request

from understudy.serving.loader import load_student
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.tasks import Head
from understudy.testing.fake_teacher import FakeTeacher
from understudy.testing.gateway import run_gateway
from understudy.testing.tiny_models import write_tiny_student

AWKWARD_TEXTS = [
    "",
    " ",
    "\x00good\x00",
    "\u202egood\u202c reversed",
    "e\u0301\u0301 good 👍🏽 👨‍👩‍👧",
    "\ufeffgood",
    "ｇｏｏｄ full-width",
]


@pytest.fixture()
def gateway(settings: Settings) -> Iterator[tuple[httpx.Client, Store]]:
    with run_gateway(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        store = open_store(settings)
        yield client, store
        store.close()


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_awkward_unicode_is_answered_and_stored_as_sent(
    gateway: tuple[httpx.Client, Store], teacher: FakeTeacher, text: str
) -> None:
    client, store = gateway
    response = client.post("/chat/completions", json=sentiment_request(text))
    assert response.status_code == 200
    expected = "positive" if "good" in text else "negative"
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {
        "sentiment": expected
    }
    call = store.get_call(response.headers["x-understudy-request-id"])
    assert call.user_text == text
    assert teacher.requests[-1]["messages"][0]["content"] == text


def test_lone_surrogates_reach_the_teacher_untouched_and_are_stored_repaired(
    gateway: tuple[httpx.Client, Store], teacher: FakeTeacher
) -> None:
    client, store = gateway
    body = json.dumps(sentiment_request("MARK good")).replace("MARK", "\\ud800x\\udc00")
    response = client.post(
        "/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert teacher.requests[-1]["messages"][0]["content"] == "\ud800x\udc00 good"
    call = store.get_call(response.headers["x-understudy-request-id"])
    assert call.user_text == "\ufffdx\ufffd good"


def test_hostile_json_gets_400_not_500(gateway: tuple[httpx.Client, Store]) -> None:
    client, _ = gateway
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        response = client.post("/chat/completions", content=body)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    schema_name = "t\u00e9\nst\x00"  # a task key that is no valid header value
    request = sentiment_request("good")
    request["response_format"]["json_schema"]["name"] = schema_name
    response = client.post("/chat/completions", json=request)
    assert response.status_code == 200
    assert response.headers["x-understudy-task"] == "t%C3%A9%0Ast%00"


def test_very_long_inputs_go_to_the_teacher_whole(
    gateway: tuple[httpx.Client, Store], teacher: FakeTeacher
) -> None:
    client, store = gateway
    text = "good " + "very " * 150_000  # 750,000 characters, under the 1 MB body limit
    response = client.post("/chat/completions", json=sentiment_request(text))
    assert response.status_code == 200
    assert teacher.requests[-1]["messages"][0]["content"] == text
    assert store.get_call(response.headers["x-understudy-request-id"]).user_text == text
    too_big = client.post("/chat/completions", json=sentiment_request("x" * 1_100_000))
    assert too_big.status_code == 413


def test_a_student_truncates_long_inputs_to_its_token_budget(tmp_path: Path) -> None:
    heads = [Head("sentiment", ("negative", "positive"))]
    student = load_student(write_tiny_student(tmp_path / "student", heads, max_length=16))
    short, long = student.predict(["good film", "good film " + "plot " * 50_000])
    assert set(long.labels) == {"sentiment"}
    assert sum(long.probs["sentiment"].values()) == pytest.approx(1.0)
    # Only the first 16 tokens count, so a long text that starts alike reads alike.
    same_start = student.predict(["good film " + "plot " * 30])[0]
    assert long.probs["sentiment"] == pytest.approx(same_start.probs["sentiment"])
    assert short.labels["sentiment"] in ("negative", "positive")
