"""``/metrics``: counters and histograms move with real calls through the gateway, and the store
gauges read the store at scrape time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from understudy.metrics import GatewayMetrics
from understudy.routing.modes import Mode
from understudy.settings import Settings
from understudy.store import open_store
from understudy.tasks import detect_task
from understudy.testing.fake_teacher import FakeTeacher, run_fake_teacher
from understudy.testing.gateway import run_gateway
from understudy.worker import Worker
from worker_support import REQUEST, log_audited_student_answer

SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["sentiment"],
}


def _label(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"sentiment": "positive" if "good" in text else "negative"}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(exposition: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def _samples(root: str) -> Samples:
    return _parse(httpx.get(f"{root}/metrics").text)


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def test_metrics_move_after_real_calls(tmp_path: Path) -> None:
    teacher = FakeTeacher(_label)
    with run_fake_teacher(teacher) as teacher_url:
        settings = Settings(upstream_base_url=teacher_url, data_dir=tmp_path / "data")
        with run_gateway(settings) as base_url:
            root = base_url.removesuffix("/v1")
            before = _samples(root)
            assert _total(before, "understudy_requests_total") == 0
            client = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)
            fmt: Any = {"type": "json_schema", "json_schema": {"name": "mood", "schema": SCHEMA}}
            for text in ("good day", "bad day", "good food"):
                client.chat.completions.create(
                    model="teacher",
                    messages=[{"role": "user", "content": text}],
                    response_format=fmt,
                )
            client.chat.completions.create(
                model="teacher", messages=[{"role": "user", "content": "hello"}]
            )
            teacher.fail_status = 500
            try:
                client.chat.completions.create(
                    model="teacher", messages=[{"role": "user", "content": "boom"}]
                )
            except openai.APIStatusError as error:
                assert error.status_code == 502
            httpx.get(f"{root}/ui/tasks")  # dashboard traffic is not counted
            after = _samples(root)
    teacher_ok = _total(after, "understudy_requests_total", side="teacher", status="200")
    assert teacher_ok == 3
    assert _total(after, "understudy_requests_total", task="mood", side="teacher") == 3
    assert _total(after, "understudy_requests_total", side="none", status="200") == 1
    assert _total(after, "understudy_requests_total", status="502") == 1
    assert _total(after, "understudy_requests_total") == 5
    assert _total(after, "understudy_request_latency_seconds_count", side="teacher") == 3
    assert _total(after, "understudy_request_latency_seconds_sum", side="teacher") > 0
    # Store-backed gauges: the task registered by the calls, in shadow mode, nothing to review.
    assert _total(after, "understudy_task_mode", task="mood", mode="shadow") == 1
    assert _total(after, "understudy_review_queue_depth", task="mood") == 0


def test_store_gauges_and_confidence_histogram(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data"))
    metrics = GatewayMetrics(store)
    metrics.observe("mood", "student", 200, 0.004, 0.93)
    metrics.observe("mood", "student", 200, 0.006, 0.55)
    text = metrics.exposition().decode()
    samples = _parse(text)
    assert _total(samples, "understudy_student_confidence_count", task="mood") == 2
    assert _total(samples, "understudy_student_confidence_bucket", task="mood", le="0.6") == 1
    assert (
        _total(samples, "understudy_request_latency_seconds_bucket", side="student", le="0.005")
        == 1
    )
    # Another app in the same process has its own, untouched registry.
    assert "understudy_student_confidence_count{" not in GatewayMetrics().exposition().decode()
    store.close()


def test_policy_live_evidence_gauges(tmp_path: Path) -> None:
    """The audited answers the switch policy judges a cascade task by: 2 of 3 agreed."""
    store = open_store(Settings(data_dir=tmp_path / "data"))
    spec = detect_task(REQUEST)
    assert spec is not None
    task = store.register_task(spec)
    store.update_task_state("review", serving_version="v1", reason="test")
    store.set_mode("review", Mode.CASCADE, "test")
    for i, teacher_label in enumerate(["positive", "positive", "negative"]):
        log_audited_student_answer(store, task, f"student-{i}", teacher_label)
    text = GatewayMetrics(store, live_window=300).exposition().decode()
    samples = _parse(text)
    assert _total(samples, "understudy_policy_live_compared", task="review") == 3
    assert _total(samples, "understudy_policy_live_agreement", task="review") == 2 / 3
    store.close()


def test_worker_running_gauge(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data"))
    metrics = GatewayMetrics(store)
    assert _total(_parse(metrics.exposition().decode()), "understudy_worker_running") == 0
    worker = Worker(Settings(data_dir=tmp_path / "data"), store)
    assert worker.lead()
    worker.run_once()
    samples = _parse(metrics.exposition().decode())
    assert _total(samples, "understudy_worker_running") == 1
    last_pass = _total(samples, "understudy_worker_last_pass_timestamp_seconds")
    assert abs(last_pass - time.time()) < 60
    worker.worker_lock.release()
    store.close()
