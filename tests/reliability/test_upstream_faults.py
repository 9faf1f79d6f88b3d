"""Upstream faults from the fake teacher give the documented behaviour: retried 429/5xx/resets,
504 on timeouts, 502 on garbage, a circuit breaker that fails fast with 503 (or lets a serving
student answer, flagged degraded), and 429 + Retry-After past the concurrency limit."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from reliability_support import poll, sentiment_request

from understudy.errors import UpstreamUnavailable
from understudy.gateway.resilience import CircuitBreaker, CircuitState, backoff_s, retry_after_s
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.testing.fake_teacher import FakeTeacher
from understudy.testing.gateway import run_gateway
from understudy.training.workflow import task_data, train_and_publish

ECHO = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture()
def http(settings: Settings) -> Iterator[httpx.Client]:
    with run_gateway(settings) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


# --- pure parts ------------------------------------------------------------------------------


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(0)
    waits = [[backoff_s(attempt, 0.5, 3.0, rng) for _ in range(200)] for attempt in range(4)]
    assert [max(w) <= cap for w, cap in zip(waits, [0.5, 1.0, 2.0, 3.0], strict=True)] == [True] * 4
    assert max(waits[3]) > 2.0 and min(waits[0]) >= 0.0  # the cap, and full jitter from 0


def test_retry_after_in_seconds_milliseconds_or_http_date() -> None:
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    date = "Mon, 23 Nov 2026 10:00:05 GMT"
    now = time.mktime(time.strptime("2026-11-23 10:00:00", "%Y-%m-%d %H:%M:%S")) - time.timezone
    assert retry_after_s({"retry-after": date}, now=now) == pytest.approx(5.0)
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_circuit_opens_probes_after_cooldown_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker("teacher", failures=3, cooldown_s=10.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success in between resets the count
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()
    now[0] = 10.0
    breaker.before_call()  # the probe
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()  # only one probe at a time
    breaker.record_failure()  # a failed probe re-opens for another cool-down
    assert breaker.state is CircuitState.OPEN
    now[0] = 20.0
    breaker.before_call()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    breaker.before_call()


def test_a_probe_that_never_reports_stops_blocking() -> None:
    now = [0.0]
    breaker = CircuitBreaker("teacher", failures=1, cooldown_s=5.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 5.0
    breaker.before_call()  # a probe whose caller is cancelled: no outcome arrives
    now[0] = 10.0
    breaker.before_call()  # another probe may go


# --- through the gateway ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_are_retried(
    http: httpx.Client, teacher: FakeTeacher, status: int
) -> None:
    teacher.fail_next, teacher.fail_next_status, teacher.retry_after_s = 2, status, 0.05
    response = http.post("/chat/completions", json=sentiment_request("good"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == '{"sentiment": "positive"}'
    assert len(teacher.requests) == 3


def test_a_long_retry_after_is_returned_to_the_client(
    http: httpx.Client, teacher: FakeTeacher
) -> None:
    teacher.fail_status, teacher.retry_after_s = 429, 60
    response = http.post("/chat/completions", json=sentiment_request("good"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "60"
    assert len(teacher.requests) == 1


def test_persistent_failures_give_502_after_bounded_retries(
    http: httpx.Client, teacher: FakeTeacher, settings: Settings
) -> None:
    teacher.fail_status = 500
    response = http.post("/chat/completions", json=sentiment_request("good"))
    assert response.status_code == 502
    assert _error(response)["code"] == "upstream_error"
    assert len(teacher.requests) == 1 + settings.upstream_retries


def test_connection_resets_are_retried_then_502(
    http: httpx.Client, teacher: FakeTeacher, settings: Settings
) -> None:
    teacher.reset_connections = True
    response = http.post("/chat/completions", json=ECHO)
    assert response.status_code == 502
    assert "upstream unreachable" in _error(response)["message"]
    assert len(teacher.requests) == 1 + settings.upstream_retries
    teacher.reset_connections = False
    assert http.post("/chat/completions", json=ECHO).status_code == 200


def test_timeouts_give_504_without_retry(settings: Settings, teacher: FakeTeacher) -> None:
    quick = settings.model_copy(update={"upstream_timeout_s": 0.3})
    teacher.latency_ms = 1000
    with run_gateway(quick) as url:
        response = httpx.post(f"{url}/chat/completions", json=ECHO, timeout=10)
    assert response.status_code == 504
    assert _error(response)["code"] == "upstream_timeout"
    assert len(teacher.requests) == 1


def test_malformed_answers_give_502(http: httpx.Client, teacher: FakeTeacher) -> None:
    teacher.malformed = True
    response = http.post("/chat/completions", json=sentiment_request("good"))
    assert response.status_code == 502
    assert "not a JSON object" in _error(response)["message"]


def test_the_circuit_opens_fails_fast_and_recovers(
    http: httpx.Client, teacher: FakeTeacher, settings: Settings
) -> None:
    teacher.fail_status = 503
    for _ in range(settings.breaker_failures):
        assert http.post("/chat/completions", json=ECHO).status_code == 502
    sent = len(teacher.requests)
    response = http.post("/chat/completions", json=ECHO)
    assert response.status_code == 503
    assert _error(response)["code"] == "upstream_unavailable"
    assert len(teacher.requests) == sent  # failed fast: the teacher was not asked
    teacher.fail_status = None
    poll(
        lambda: http.post("/chat/completions", json=ECHO).status_code == 200,
        "the half-open probe to close the circuit",
    )


def test_past_the_concurrency_limit_callers_get_429(
    settings: Settings, teacher: FakeTeacher
) -> None:
    tight = settings.model_copy(update={"max_concurrent_requests": 2, "max_queued_requests": 2})
    teacher.latency_ms = 400
    statuses: list[int] = []
    retry_after: list[str] = []
    start = threading.Barrier(10)

    def call(url: str) -> None:
        start.wait()
        response = httpx.post(f"{url}/chat/completions", json=ECHO, timeout=10)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert _error(response)["type"] == "rate_limit_error"
            retry_after.append(response.headers["retry-after"])

    with run_gateway(tight) as url:
        threads = [threading.Thread(target=call, args=(url,)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(statuses) == [200] * 4 + [429] * 6
    assert retry_after == ["1"] * 6


# --- degraded mode: a serving student stands in for a failing teacher --------------------------


@contextmanager
def student_standing_by(settings: Settings) -> Iterator[tuple[httpx.Client, Store]]:
    """A gateway whose sentiment task has a published ngram student in cascade mode, with a
    threshold above 1 so the teacher answers every call while it is up."""
    fast = settings.model_copy(update={"model_refresh_s": 0.05, "heldout_fraction": 0.0})
    with run_gateway(fast) as url, httpx.Client(base_url=url, timeout=10) as client:
        for i in range(40):
            text = f"{'good' if i % 2 else 'bad'} movie number {i}"
            assert client.post("/chat/completions", json=sentiment_request(text)).status_code == 200
        store = open_store(fast)
        data = task_data("sentiment", fast, data=None, store=store)
        published = train_and_publish("ngram", data, ModelRegistry(fast.models_dir), store=store)
        store.update_task_state("sentiment", serving_version=published.version, threshold=1.01)
        store.set_mode("sentiment", "cascade", "test: a student stands by")
        yield client, store
        store.close()


@pytest.fixture()
def serving(settings: Settings) -> Iterator[tuple[httpx.Client, Store]]:
    with student_standing_by(settings) as serving:
        yield serving


def test_a_serving_student_answers_while_the_teacher_is_down(
    serving: tuple[httpx.Client, Store], teacher: FakeTeacher
) -> None:
    client, store = serving
    teacher.fail_status = 500

    def degraded() -> bool:
        response = client.post("/chat/completions", json=sentiment_request("a good film"))
        return response.headers.get("x-understudy-degraded") == "true"

    poll(degraded, "the student to stand in")
    response = client.post("/chat/completions", json=sentiment_request("good, really good"))
    assert response.status_code == 200
    assert response.headers["x-understudy-answered-by"] == "student"
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {
        "sentiment": "positive"
    }
    call = store.get_call(response.headers["x-understudy-request-id"])
    assert call.answered_by == "student" and "degraded" in (call.error or "")
    # A call no student can answer gets a clean OpenAI-format error instead.
    plain = client.post("/chat/completions", json=ECHO)
    assert plain.status_code in (502, 503)
    assert _error(plain)["type"] == "upstream_error"


def test_audits_past_the_limit_are_skipped_while_the_teacher_is_slow(
    settings: Settings, teacher: FakeTeacher
) -> None:
    limited = settings.model_copy(update={"max_concurrent_audits": 2})
    with student_standing_by(limited) as (client, store):
        store.update_task_state("sentiment", audit_rate=1.0, reason="test: audit every answer")
        store.set_mode("sentiment", "student", "test: the student answers everything")
        # Each audit holds its upstream connection for 3 s: far longer than the calls below take.
        teacher.latency_ms = 3000.0

        def student_answers() -> bool:
            response = client.post("/chat/completions", json=sentiment_request("good stuff"))
            return response.headers["x-understudy-answered-by"] == "student"

        poll(student_answers, "the student to answer")  # the first audit is now in flight
        for i in range(5):
            response = client.post("/chat/completions", json=sentiment_request(f"good {i}"))
            assert response.headers["x-understudy-answered-by"] == "student"

        def skipped() -> float:
            root = str(client.base_url).removesuffix("/").removesuffix("/v1")
            for line in httpx.get(f"{root}/metrics").text.splitlines():
                if line.startswith('understudy_audits_skipped_total{task="sentiment"}'):
                    return float(line.split()[-1])
            return 0.0

        # Six audits sampled, two in flight at most: the other four were skipped, not queued.
        assert skipped() == 4
        audited = lambda: sum(  # noqa: E731
            call.agreed is not None for call in store.recent_calls("sentiment", limit=1000)
        )
        poll(lambda: audited() == 2, "the two audits in flight to finish")
        client.post("/chat/completions", json=sentiment_request("good again"))
        poll(lambda: audited() == 3, "a later audit to go through")
        assert skipped() == 4


def test_an_admin_change_is_in_force_from_this_gateway_s_next_call(settings: Settings) -> None:
    with student_standing_by(settings) as (client, store):
        store.update_task_state("sentiment", threshold=0.0, reason="test: the student answers")

        def answered_by() -> str:
            response = client.post("/chat/completions", json=sentiment_request("good stuff"))
            return str(response.headers["x-understudy-answered-by"])

        poll(lambda: answered_by() == "student", "the student to answer")
        root = str(client.base_url).removesuffix("/").removesuffix("/v1")
        off = httpx.patch(
            f"{root}/admin/tasks/sentiment", json={"reason": "incident", "mode": "teacher"}
        )
        assert off.status_code == 200, off.text
        # Not after the gateway's next refresh of its cached state: at once.
        assert answered_by() == "teacher"
        # The same for the dashboard's forms.
        on = httpx.post(
            f"{root}/ui/tasks/sentiment/mode",
            data={"mode": "cascade", "reason": "incident over", "confirm": "yes"},
        )
        assert on.status_code == 303, on.text
        assert answered_by() == "student"
