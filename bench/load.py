"""Bounded load against a local gateway: throughput, latency, errors and memory over time.

Two scenarios, each for half of ``--minutes`` (and at most ``--max-requests`` calls):

- ``student``: classification calls of a task whose ngram student serves in student mode (it
  answers every call; a 5% audit sample still goes to the teacher in the background). The
  student is trained from 300 teacher-answered calls made through the same gateway first.
- ``passthrough``: plain chat calls, forwarded to the teacher and logged. No upstream key is
  configured, so the client's own key is passed through (and never stored).

The fake teacher (5 ms latency), the gateway (uvicorn, one worker) and this load generator
(``--concurrency`` asyncio clients on keep-alive connections) run as three processes on
localhost. Concurrency stays below the gateway's limit, so every call must get a 200. The
gateway's RSS is sampled every ``--sample-s`` seconds; memory growth is the median RSS of the
last tenth of a scenario minus that of its second tenth (the first is warm-up). Scenarios of 11
minutes or more also report the growth over their last 10 minutes (median RSS of the last minute
minus that of the minute 10 minutes earlier): a slow warm-up, such as caches filling with use,
levels off there, where a leak keeps growing.

    .venv/bin/python bench/load.py                    # 2 x 1.5 min -> bench/results/load.json
    .venv/bin/python bench/load.py --minutes 10       # the full soak (2 x 5 min)
    .venv/bin/python bench/load.py --minutes 60       # 2 x 30 min: growth over the last 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from local_servers import HOST, percentile, teacher_and_gateway

RESULTS = Path(__file__).parent / "results" / "load.json"
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}
TEACHER_LATENCY_MS = 5.0
TRAINING_CALLS = 300
# Memory must be flat over this window at the end of a scenario (issue: "over 10 minutes").
FLAT_WINDOW_S = 600.0
# Only localhost is ever loaded: this is a benchmark of our own processes, not a load tool.


def label_fn(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The teacher's rule: "good" means positive."""
    del schema
    return {"sentiment": "positive" if "good" in text else "negative"}


def _run_teacher(port: int) -> None:
    import uvicorn

    from understudy.testing.fake_teacher import FakeTeacher

    app = FakeTeacher(label_fn, latency_ms=TEACHER_LATENCY_MS).create_app()
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def _run_gateway(port: int, teacher_port: int, data_dir: str) -> None:
    import uvicorn

    from understudy.gateway import create_app
    from understudy.settings import Settings

    settings = Settings(
        upstream_base_url=f"http://{HOST}:{teacher_port}/v1",
        data_dir=Path(data_dir),
        model_refresh_s=0.5,
        template_min_calls=20,
    )
    uvicorn.run(create_app(settings), host=HOST, port=port, log_level="warning", access_log=False)


def _body(scenario: str, i: int) -> dict[str, Any]:
    text = f"Classify this review:\n\nreview {i}: a {'good' if i % 2 else 'bad'} film, take {i % 7}"
    body: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": text}]}
    if scenario != "passthrough":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "sentiment", "schema": SCHEMA, "strict": True},
        }
    return body


def prepare_student(gateway: str, data_dir: Path) -> str:
    """Make the sentiment task's ngram student serve in student mode; returns its version."""
    from understudy.serving.registry import ModelRegistry
    from understudy.settings import Settings
    from understudy.store import open_store
    from understudy.training.workflow import task_data, train_and_publish

    with httpx.Client(base_url=gateway, timeout=30) as client:
        for i in range(TRAINING_CALLS):
            client.post("/v1/chat/completions", json=_body("student", i)).raise_for_status()
    settings = Settings(data_dir=data_dir, heldout_fraction=0.2)
    store = open_store(settings)
    data = task_data("sentiment", settings, data=None, store=store)
    published = train_and_publish("ngram", data, ModelRegistry(settings.models_dir), store=store)
    store.update_task_state("sentiment", serving_version=published.version, threshold=0.0)
    store.set_mode("sentiment", "student", "bench/load.py: the student answers everything")
    store.close()
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=gateway, timeout=30) as client:
        while time.monotonic() < deadline:
            answer = client.post("/v1/chat/completions", json=_body("student", 1))
            if answer.headers.get("x-understudy-answered-by") == "student":
                return published.version
            time.sleep(0.2)
    raise RuntimeError("the gateway did not pick up the student")


@dataclass
class ScenarioResult:
    """One scenario's measurements (latencies in ms, RSS samples as (seconds, MiB))."""

    name: str
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    answered_by: dict[str, int] = field(default_factory=dict)
    rss: list[tuple[float, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The numbers reported in the table and the JSON."""
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float:
            return percentile(ordered, q) if ordered else 0

        tenth = max(1, len(self.rss) // 10)
        early = statistics.median(r for _, r in self.rss[tenth : 2 * tenth] or self.rss[:1])
        late = statistics.median(r for _, r in self.rss[-tenth:])
        end = self.rss[-1][0]
        last_minute = [r for t, r in self.rss if t >= end - 60]
        window_start = [
            r for t, r in self.rss if end - FLAT_WINDOW_S - 60 <= t < end - FLAT_WINDOW_S
        ]
        window_growth = (
            round(statistics.median(last_minute) - statistics.median(window_start), 1)
            if window_start
            else None
        )
        return {
            "scenario": self.name,
            "seconds": round(self.seconds, 1),
            "requests": len(self.latencies_ms) + sum(self.errors.values()),
            "throughput_rps": round(len(self.latencies_ms) / self.seconds, 1),
            "p50_ms": round(pct(0.5), 2),
            "p99_ms": round(pct(0.99), 2),
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "answered_by": self.answered_by,
            "rss_start_mib": round(self.rss[0][1], 1),
            "rss_end_mib": round(self.rss[-1][1], 1),
            "rss_growth_mib": round(late - early, 1),
            "rss_growth_last_10_min_mib": window_growth,
            "rss_samples": [(round(t, 1), round(r, 1)) for t, r in self.rss],
        }


async def run_scenario(
    name: str,
    gateway: str,
    process: psutil.Process,
    seconds: float,
    max_requests: int,
    concurrency: int,
    sample_s: float,
) -> ScenarioResult:
    """``concurrency`` clients send calls back to back until time or count runs out."""
    result = ScenarioResult(name)
    started = time.perf_counter()
    counter = iter(range(max_requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"authorization": "Bearer sk-client-own-key"}  # passed through, never stored

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.perf_counter() - started > seconds:
                return
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/chat/completions", json=_body(name, i))
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
                result.errors[kind] = result.errors.get(kind, 0) + 1
                continue
            if response.status_code != 200:
                kind = f"HTTP {response.status_code}"
                result.errors[kind] = result.errors.get(kind, 0) + 1
                continue
            result.latencies_ms.append((time.perf_counter() - sent) * 1000)
            side = response.headers.get("x-understudy-answered-by", "teacher (pass-through)")
            result.answered_by[side] = result.answered_by.get(side, 0) + 1

    async def sample_rss(done: asyncio.Event) -> None:
        while not done.is_set():
            rss = process.memory_info().rss / 2**20
            result.rss.append((time.perf_counter() - started, rss))
            with contextlib.suppress(TimeoutError):  # the sampling interval elapsed
                await asyncio.wait_for(done.wait(), sample_s)
        result.rss.append((time.perf_counter() - started, process.memory_info().rss / 2**20))

    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=gateway, timeout=30, limits=limits, headers=headers) as c:
        sampler = asyncio.create_task(sample_rss(done))
        await asyncio.gather(*(client_loop(c) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
        done.set()
        await sampler
    return result


def machine() -> dict[str, Any]:
    """Where the run happened (the load average says how busy the machine was)."""
    return {
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "httpx": version("httpx"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="total, split over scenarios")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval")
    parser.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    args = parser.parse_args()
    console = Console(width=150)
    load_before = os.getloadavg()[0]
    with teacher_and_gateway(_run_teacher, _run_gateway) as servers:
        student = prepare_student(servers.gateway, servers.data_dir)
        console.print(f"student {student} serves the sentiment task; loading the gateway")
        process = psutil.Process(servers.gateway_pid)
        results = [
            asyncio.run(
                run_scenario(
                    name,
                    servers.gateway,
                    process,
                    args.minutes * 60 / 2,
                    args.max_requests,
                    args.concurrency,
                    args.sample_s,
                )
            )
            for name in ("student", "passthrough")
        ]
    summaries = [r.summary() for r in results]
    table = Table(
        "scenario",
        "seconds",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "RSS start→end MiB",
        "RSS growth MiB",
        "last 10 min",
        title=f"gateway under load: {args.concurrency} concurrent clients on {HOST}",
    )
    for s in summaries:
        table.add_row(
            s["scenario"],
            str(s["seconds"]),
            str(s["requests"]),
            str(s["throughput_rps"]),
            str(s["p50_ms"]),
            str(s["p99_ms"]),
            str(s["errors"]),
            f"{s['rss_start_mib']}→{s['rss_end_mib']}",
            str(s["rss_growth_mib"]),
            "n/a"
            if s["rss_growth_last_10_min_mib"] is None
            else str(s["rss_growth_last_10_min_mib"]),
        )
    console.print(table)
    console.print(f"load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        payload = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "concurrency": args.concurrency,
            "teacher_latency_ms": TEACHER_LATENCY_MS,
            "load_average_1m_before": round(load_before, 2),
            "scenarios": summaries,
            "machine": machine(),
        }
        RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if all(s["errors"] == 0 for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
