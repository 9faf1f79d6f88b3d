"""``understudy demo`` and the end-to-end benchmark: the whole story on one machine.

A real labelled dataset is replayed through the real ``openai`` client against ``understudy
serve`` (a child process, which starts its worker process), with the shipped fake teacher
answering from the dataset's labels. The gateway shadows the teacher, the worker trains
students, and when one is good enough the gateway starts answering with it; the live view shows
the mode changes, coverage, agreement and latency, and the report sums it up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from understudy.datasets import DatasetName, load_dataset
from understudy.replay import (
    ReplayResult,
    Scenario,
    dataset_teacher,
    percentile,
    replay,
    scenario_for,
    teacher_label,
)
from understudy.savings import task_savings
from understudy.settings import Settings
from understudy.store import open_store
from understudy.testing.fake_teacher import run_fake_teacher

# Seconds to wait for `understudy serve` to answer its health check.
GATEWAY_START_TIMEOUT_S = 180.0
# Calls at the end of the stream over which the final coverage is measured.
FINAL_WINDOW = 500


@dataclass(frozen=True)
class DemoConfig:
    """What to replay and how fast.

    ``calls``: texts sent (the dataset cycles if it has fewer); ``concurrency``: client threads;
    ``teacher_latency_ms``: the fake teacher's delay per answer; ``noise``: share of texts the
    teacher labels wrongly (fixed per text); ``target_agreement``: the switch policy's target;
    ``student_kinds``: students the worker trains; the demo's own short list, because a
    fine-tuned or distilled MiniLM takes longer on two cores than the whole demo (the end-to-end
    benchmark passes the settings' default kinds).
    """

    dataset: DatasetName = "trec6"
    calls: int = 5000
    concurrency: int = 8
    teacher_latency_ms: float = 300.0
    noise: float = 0.01
    # Lower than the product's 0.98 so that a few thousand calls on two cores show the switch
    # (at 0.95 the held-out lower bound hovers at the target, so the switch comes late or not at
    # all: one run switched only at 3,527 calls); the report states the target it ran with.
    target_agreement: float = 0.92
    student_kinds: tuple[str, ...] = ("ngram", "probe")
    audit_rate: float = 0.05
    seed: int = 0
    data_dir: Path | None = None


@dataclass
class DemoReport:
    """The outcome of a replay (latencies in ms, costs in USD)."""

    config: dict[str, Any]
    calls: int
    errors: int
    calls_until_first_switch: int | None
    student_share: float
    final_coverage: float
    student_agreement_with_teacher: float | None
    student_accuracy_vs_gold: float | None
    teacher_accuracy_vs_gold: float | None
    latency_ms: dict[str, dict[str, float | None]]
    teacher_calls_avoided: int
    cost_avoided_usd: float | None
    teacher_cost_usd: float | None
    events: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        return asdict(self)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway_process(settings: Settings, log_path: Path) -> Iterator[str]:
    """Run ``understudy serve`` (and so its worker) as a child process; yields its ``/v1`` URL."""
    port = _free_port()
    env = {**os.environ, **settings.to_env(), "UNDERSTUDY_PORT": str(port)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "understudy", "serve"], env=env, stdout=log, stderr=log
        )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"understudy serve exited early; see {log_path}")
            try:
                if httpx.get(f"{root}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"understudy serve did not start; see {log_path}")
            time.sleep(0.2)
        yield f"{root}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def demo_settings(config: DemoConfig, data_dir: Path, teacher_url: str) -> Settings:
    """Settings of the demo's gateway: the defaults, a fresh data dir and a brisk worker."""
    return Settings(
        data_dir=data_dir,
        upstream_base_url=teacher_url,
        upstream_api_key="fake-teacher-key",
        target_agreement=config.target_agreement,
        audit_rate=config.audit_rate,
        student_kinds=list(config.student_kinds),
        worker_poll_s=1.0,
        model_refresh_s=0.5,
        start_worker=True,
        log_level="warning",
    )


class LiveView:
    """Counters of a running replay, rendered as a rich table."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.results: list[ReplayResult] = []
        self.lock = threading.Lock()
        self.mode = "shadow"
        self.serving: str | None = None
        self.events: list[str] = []

    def add(self, result: ReplayResult) -> None:
        with self.lock:
            self.results.append(result)

    def render(self) -> Group:
        with self.lock:
            recent = self.results[-200:]
            done = len(self.results)
            by_side = {
                side: [r.latency_ms for r in self.results[-1000:] if r.answered_by == side]
                for side in ("teacher", "student")
            }
        student_recent = sum(r.answered_by == "student" for r in recent) / max(1, len(recent))
        table = Table(title="understudy demo", show_header=False, min_width=60)
        table.add_row("calls", f"{done} / {self.total}")
        table.add_row("mode", self.mode)
        table.add_row("serving student", self.serving or "none yet")
        table.add_row("answered by student (last 200)", f"{student_recent:.0%}")
        for side, values in by_side.items():
            p50 = percentile(values, 50)
            table.add_row(f"{side} p50 latency", "-" if p50 is None else f"{p50:.1f} ms")
        events = Table(title="events", show_header=False, min_width=60)
        for line in self.events[-6:]:
            events.add_row(line)
        return Group(table, events)


def _watch(view: LiveView, settings: Settings, task: str, stop: threading.Event) -> None:
    """Refresh the view's mode, student and events from the store until ``stop``."""
    store = open_store(settings)
    try:
        while not stop.wait(0.5):
            try:
                state = store.task_state(task)
            except Exception:  # the task appears with the first call
                continue
            view.mode, view.serving = state.mode.value, state.serving_version
            view.events = [
                f"{e.created_at:%H:%M:%S} {e.kind}: {e.reason}"
                for e in reversed(store.events(task, limit=20))
                if e.kind in ("mode", "state", "blocked")
            ]
    finally:
        store.close()


def _report(
    config: DemoConfig,
    scenario: Scenario,
    results: list[ReplayResult],
    settings: Settings,
    duration_s: float,
) -> DemoReport:
    answered = [r for r in results if r.error is None]
    stream = scenario.stream(config.calls)
    by_side = {
        side: [r for r in answered if r.answered_by == side] for side in ("teacher", "student")
    }
    student = by_side["student"]

    def teacher_answer(r: ReplayResult) -> str:
        return teacher_label(scenario, stream[r.index][0], r.gold, config.noise, config.seed)

    def share(rows: list[ReplayResult], ok: Any) -> float | None:
        return sum(1 for r in rows if ok(r)) / len(rows) if rows else None

    ordered = sorted(answered, key=lambda r: r.index)
    first = next((i for i, r in enumerate(ordered) if r.answered_by == "student"), None)
    final = ordered[-FINAL_WINDOW:]
    store = open_store(settings)
    savings = task_savings(store, scenario.task, settings.model_prices)
    events = [
        {"at": e.created_at.isoformat(), "from": e.from_mode, "to": e.to_mode, "reason": e.reason}
        for e in reversed(store.events(scenario.task, limit=100))
        if e.kind == "mode"
    ]
    store.close()
    return DemoReport(
        config={**asdict(config), "data_dir": str(settings.data_dir)},
        calls=len(results),
        errors=len(results) - len(answered),
        calls_until_first_switch=first,
        student_share=len(student) / len(answered) if answered else 0.0,
        final_coverage=share(final, lambda r: r.answered_by == "student") or 0.0,
        student_agreement_with_teacher=share(student, lambda r: r.label == teacher_answer(r)),
        student_accuracy_vs_gold=share(student, lambda r: r.label == r.gold),
        teacher_accuracy_vs_gold=share(by_side["teacher"], lambda r: r.label == r.gold),
        latency_ms={
            side: {
                "p50": percentile([r.latency_ms for r in rows], 50),
                "p99": percentile([r.latency_ms for r in rows], 99),
            }
            for side, rows in by_side.items()
        },
        teacher_calls_avoided=savings.student_calls - savings.audited_calls,
        cost_avoided_usd=savings.avoided_cost_usd,
        teacher_cost_usd=savings.teacher_cost_usd,
        events=events,
        duration_s=duration_s,
    )


def run_demo(config: DemoConfig, console: Console | None = None, live: bool = True) -> DemoReport:
    """Replay ``config.dataset`` through a fresh gateway and return the report."""
    console = console or Console()
    scenario = scenario_for(load_dataset(config.dataset, seed=config.seed))
    data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="understudy-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    teacher = dataset_teacher(
        scenario, noise=config.noise, latency_ms=config.teacher_latency_ms, seed=config.seed
    )
    view = LiveView(config.calls)
    stop = threading.Event()
    started = time.perf_counter()
    with run_fake_teacher(teacher) as teacher_url:
        settings = demo_settings(config, data_dir, teacher_url)
        console.print(
            f"[bold]understudy demo[/bold]: {config.calls} calls of {scenario.task} "
            f"({scenario.dataset.source}) through `understudy serve`, target agreement "
            f"{config.target_agreement:.0%}; data in {data_dir}"
        )
        with gateway_process(settings, data_dir / "gateway.log") as base_url:
            watcher = threading.Thread(
                target=_watch, args=(view, settings, scenario.task, stop), daemon=True
            )
            watcher.start()
            stream = scenario.stream(config.calls)
            with Live(
                view.render(), console=console, refresh_per_second=2, transient=not live
            ) as screen:
                runner = threading.Thread(
                    target=replay,
                    args=(base_url, scenario, stream),
                    kwargs={"concurrency": config.concurrency, "on_result": view.add},
                    daemon=True,
                )
                runner.start()
                while runner.is_alive():
                    screen.update(view.render())
                    runner.join(0.5)
                screen.update(view.render())
            stop.set()
            watcher.join()
    return _report(config, scenario, list(view.results), settings, time.perf_counter() - started)


def report_table(report: DemoReport) -> Table:
    """The report as a two-column rich table."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    table = Table(title="understudy: what happened", show_header=False)
    table.add_row("calls (errors)", f"{report.calls} ({report.errors})")
    table.add_row("calls until the student first answered", str(report.calls_until_first_switch))
    table.add_row("answered by the student, overall", pct(report.student_share))
    table.add_row(f"answered by the student, last {FINAL_WINDOW}", pct(report.final_coverage))
    table.add_row("student agreement with the teacher", pct(report.student_agreement_with_teacher))
    table.add_row("student accuracy vs gold", pct(report.student_accuracy_vs_gold))
    table.add_row("teacher accuracy vs gold", pct(report.teacher_accuracy_vs_gold))
    for side, latency in report.latency_ms.items():
        table.add_row(f"{side} latency p50 / p99", f"{ms(latency['p50'])} / {ms(latency['p99'])}")
    table.add_row("teacher calls avoided", str(report.teacher_calls_avoided))
    cost = report.cost_avoided_usd
    table.add_row("teacher cost avoided", "-" if cost is None else f"${cost:.4f}")
    for event in report.events:
        table.add_row(f"mode {event['from']} -> {event['to']}", str(event["reason"]))
    return table
