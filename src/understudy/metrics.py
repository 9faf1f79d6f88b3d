"""Prometheus metrics of a gateway: request counters and latency histograms from an ASGI
middleware, store-backed gauges from a collector that reads the store at scrape time.

Each app gets its own ``CollectorRegistry`` (not prometheus-client's global one), so several apps
in one process (tests, benchmarks) never collide. The middleware reads only the response headers
the gateway sets on chat and classify responses, so the chat path needs no metrics code:

- ``x-understudy-task``: the task key (absent for pass-through calls);
- ``x-understudy-answered-by``: ``teacher`` or ``student``;
- ``x-understudy-confidence``: the student's confidence, when it predicted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from understudy.store import Store, switch
from understudy.store import queries as q
from understudy.store.worker_status import worker_status

logger = logging.getLogger(__name__)

TASK_HEADER = "x-understudy-task"
ANSWERED_BY_HEADER = "x-understudy-answered-by"
CONFIDENCE_HEADER = "x-understudy-confidence"
# Requests under this path prefix are the API traffic that is counted (not /ui nor /metrics).
API_PREFIX = "/v1/"
# Latency buckets in seconds: from a fast student (milliseconds) to a slow teacher (a minute).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0)


class GatewayMetrics:
    """The metrics of one app, in their own registry."""

    def __init__(self, store: Store | None = None, *, live_window: int | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "understudy_requests",
            "API requests by task (empty: pass-through), answering side and HTTP status.",
            ["task", "side", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "understudy_request_latency_seconds",
            "API request latency in seconds, until the last byte of the response, by side.",
            ["side"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.confidence = Histogram(
            "understudy_student_confidence",
            "The student's calibrated confidence on the calls it predicted, by task.",
            ["task"],
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.audits_skipped = Counter(
            "understudy_audits_skipped",
            "Sampled audits not sent because max_concurrent_audits were in flight, by task.",
            ["task"],
            registry=self.registry,
        )
        if store is not None:
            self.registry.register(StoreCollector(store, live_window))

    def observe(
        self, task: str, side: str, status: int, seconds: float, confidence: float | None
    ) -> None:
        """Count one finished API request."""
        self.requests.labels(task=task, side=side, status=str(status)).inc()
        self.latency.labels(side=side).observe(seconds)
        if confidence is not None:
            self.confidence.labels(task=task).observe(confidence)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class StoreCollector(Collector):
    """Gauges read from the store at each scrape: live agreement, review-queue depth, training
    runs by status, the mode of each task, whether a worker holds the database's worker lock and
    when it last finished a pass, and, given the worker's ``live_window``, the live evidence the
    switch policy judges each task by (``switch.policy_live_agreement``)."""

    def __init__(self, store: Store, live_window: int | None = None) -> None:
        self.store = store
        self.live_window = live_window

    def collect(self) -> Iterator[Metric]:
        agreement = GaugeMetricFamily(
            "understudy_live_agreement",
            f"Fraction of compared calls where student and teacher agreed (last "
            f"{q.OVERVIEW_DAYS} days).",
            labels=["task"],
        )
        compared = GaugeMetricFamily(
            "understudy_live_compared",
            f"Calls where both sides' labels are known (last {q.OVERVIEW_DAYS} days).",
            labels=["task"],
        )
        depth = GaugeMetricFamily(
            "understudy_review_queue_depth",
            "Student-teacher disagreements no human has reviewed yet.",
            labels=["task"],
        )
        runs = GaugeMetricFamily(
            "understudy_training_runs",
            "Training runs of students by status.",
            labels=["task", "status"],
        )
        mode = GaugeMetricFamily(
            "understudy_task_mode", "1 for the mode each task is in.", labels=["task", "mode"]
        )
        policy_compared = GaugeMetricFamily(
            "understudy_policy_live_compared",
            "Comparisons the switch policy judges a task by: its serving student's audited "
            "answers (in shadow: predictions) since the last mode change, the newest live_window.",
            labels=["task"],
        )
        policy_agreement = GaugeMetricFamily(
            "understudy_policy_live_agreement",
            "Share of understudy_policy_live_compared where student and teacher agreed.",
            labels=["task"],
        )
        worker = GaugeMetricFamily(
            "understudy_worker_running",
            "1 while a worker holds this database's worker lock (trains students, moves tasks "
            "between modes, rolls drifting students back), else 0.",
        )
        last_pass = GaugeMetricFamily(
            "understudy_worker_last_pass_timestamp_seconds",
            "When the worker holding the lock last finished a pass (Unix time): alert when "
            "time() minus this grows while understudy_worker_running is 1 (a stuck worker).",
        )
        try:
            acting = worker_status(self.store, poll_s=0.0)
            worker.add_metric([], 1 if acting.running else 0)
            if acting.heartbeat is not None and acting.heartbeat.last_pass_at is not None:
                last_pass.add_metric([], acting.heartbeat.last_pass_at.timestamp())
            for task in q.task_gauges(self.store):
                compared.add_metric([task.key], task.compared)
                if task.compared:
                    agreement.add_metric([task.key], task.agreed / task.compared)
                depth.add_metric([task.key], task.review_depth)
                mode.add_metric([task.key, task.mode.value], 1)
                if self.live_window is not None:
                    state = self.store.task_state(task.key)
                    live = switch.policy_live_agreement(self.store, state, self.live_window)
                    policy_compared.add_metric([task.key], live[0])
                    if live[0]:
                        policy_agreement.add_metric([task.key], live[1] / live[0])
            for (key, status), count in q.training_run_counts(self.store).items():
                runs.add_metric([key, status], count)
        except Exception:
            # A scrape must still return the request metrics when the database is unavailable.
            logger.exception("reading the store for /metrics failed")
            return
        yield from (agreement, compared, depth, runs, mode, worker, last_pass)
        if self.live_window is not None:
            yield from (policy_compared, policy_agreement)


class MetricsMiddleware:
    """Times every ``/v1/`` request to its last response byte and counts it by the task and side
    the gateway put in the response headers (plain ASGI, so streams pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, str] = {}
        status = 500

        async def observe_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    key = name.decode("latin-1").lower()
                    if key in (TASK_HEADER, ANSWERED_BY_HEADER, CONFIDENCE_HEADER):
                        seen[key] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, observe_send)
        finally:
            self.metrics.observe(
                task=seen.get(TASK_HEADER, ""),
                side=seen.get(ANSWERED_BY_HEADER, "none"),
                status=status,
                seconds=time.perf_counter() - started,
                confidence=_float_or_none(seen.get(CONFIDENCE_HEADER)),
            )


def _float_or_none(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def install_metrics(app: FastAPI, store: Store, live_window: int) -> GatewayMetrics:
    """Add the metrics middleware and ``GET /metrics`` to ``app``; returns the metrics (also on
    ``app.state.metrics``). ``live_window``: ``Settings.live_window``, as the worker reads it."""
    metrics = GatewayMetrics(store, live_window=live_window)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        """Prometheus' scrape endpoint."""
        current: GatewayMetrics = request.app.state.metrics
        return Response(current.exposition(), media_type=CONTENT_TYPE_LATEST)

    return metrics
