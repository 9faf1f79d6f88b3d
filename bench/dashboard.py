"""Server-side render time of every dashboard page with 100k logged calls in the store.

Seeds a fresh SQLite store with ``--calls`` classification calls of one task spread over the last
7 days (the window of the tasks page's rates; about 14k calls a day at 100k), a promoted student
with its coverage curve, and 200 human labels (gold for the confusion matrix). Then requests each
page in-process through the real gateway app (``create_app``; Starlette's TestClient, so no
network or browser time is included) ``--runs`` times after ``--warmup`` discarded runs, and
reports the median and p99 wall time per page in milliseconds. Target: every page ≤ 300 ms.
It also reports the median CPU time of the process per request (gateway, SQLite and client
together): on a shared machine the wall time includes waiting for a core, the CPU time does not.

Rates and charts read the hourly rollup of calls (``understudy.store.rollup``), which a read fills
the first time it meets a closed hour. The seeded store starts with none, so the first request of
the run (the tasks page) fills the whole 7-day history; its time is reported apart as "first"
and excluded from the timed runs like every warm-up request. Every later request still reads the
open hour (about 600 calls at this rate) and the edges of the 7-day window from the calls.

    .venv/bin/python bench/dashboard.py [--calls 100000] [--runs 30]

Writes bench/results/dashboard.json with the machine's details.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table

from local_servers import percentile
from understudy.dashboard.sample import seed_student_run, seed_traffic, sentiment_spec
from understudy.gateway import create_app
from understudy.settings import Settings
from understudy.store import open_store

TARGET_MS = 300.0
RESULTS = Path(__file__).parent / "results" / "dashboard.json"
HUMAN_LABELS = 200


def _pages(call_id: str) -> dict[str, str]:
    return {
        "tasks": "/ui/tasks",
        "task (48h chart)": "/ui/tasks/sentiment",
        "task (7d chart)": "/ui/tasks/sentiment?range=7d",
        "review page": "/ui/tasks/sentiment/review",
        "review queue API (20 items)": "/ui/api/tasks/sentiment/review",
        "review queue API, label filter": (
            "/ui/api/tasks/sentiment/review?label=sentiment%3Dneutral"
        ),
        "review queue API, disagreements": "/ui/api/tasks/sentiment/review?disagreement=true",
        "calls": "/ui/calls",
        "calls, task + student filter": "/ui/calls?task=sentiment&side=student",
        "calls, text search": "/ui/calls?text=superb+and+the+food+okay",
        "call detail": f"/ui/calls/{call_id}",
        "/metrics scrape": "/metrics",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="logged calls to seed")
    parser.add_argument("--runs", type=int, default=30, help="timed requests per page")
    parser.add_argument(
        "--warmup", type=int, default=3, help="discarded requests per page (at least 1)"
    )
    args = parser.parse_args()
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        # A priced teacher model, so the pages compute and show the teacher cost avoided.
        settings = Settings(data_dir=Path(tmp) / "data", model_prices={"teacher-model": [2.5, 10]})
        store = open_store(settings)
        task = store.register_task(sentiment_spec())
        started = time.perf_counter()
        seeded = seed_traffic(store, task, args.calls, seed=0, span=timedelta(days=7))
        seed_student_run(store, task)
        teacher_calls = [c for c in seeded if c.answered_by == "teacher"]
        for call in teacher_calls[:: max(1, len(teacher_calls) // HUMAN_LABELS)][:HUMAN_LABELS]:
            store.add_labels(call.id, {"sentiment": call.teacher_label or "neutral"})
        seed_s = time.perf_counter() - started
        console.print(f"seeded {args.calls:,} calls in {seed_s:.1f} s")

        rows: list[dict[str, Any]] = []
        with TestClient(create_app(settings, store)) as client:
            for name, url in _pages(seeded[-1].id).items():
                warmup_ms = []
                for _ in range(max(1, args.warmup)):
                    t0 = time.perf_counter()
                    assert client.get(url).status_code == 200, url
                    warmup_ms.append((time.perf_counter() - t0) * 1000.0)
                times, cpu = [], []
                for _ in range(args.runs):
                    t0, c0 = time.perf_counter(), time.process_time()
                    response = client.get(url)
                    times.append((time.perf_counter() - t0) * 1000.0)
                    cpu.append((time.process_time() - c0) * 1000.0)
                    assert response.status_code == 200, url
                rows.append(
                    {
                        "page": name,
                        "url": url,
                        "first_ms": warmup_ms[0],
                        "median_ms": statistics.median(times),
                        "p99_ms": percentile(times, 0.99),
                        "cpu_median_ms": statistics.median(cpu),
                        "bytes": len(response.content),
                    }
                )
        store.close()

    table = Table(title=f"Dashboard server time, {args.calls:,} calls, {args.runs} runs/page")
    columns = ("page", "first ms", "median ms", "p99 ms", "CPU median ms", "KiB")
    for column in (*columns, f"≤ {TARGET_MS:.0f} ms"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for row in rows:
        ok = row["p99_ms"] <= TARGET_MS
        table.add_row(
            row["page"],
            f"{row['first_ms']:.1f}",
            f"{row['median_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['cpu_median_ms']:.1f}",
            f"{row['bytes'] / 1024:.1f}",
            "yes" if ok else "[red]no[/red]",
        )
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "dashboard page render (server side, in-process TestClient)",
                "calls": args.calls,
                "span_days": 7,
                "human_labels": HUMAN_LABELS,
                "runs": args.runs,
                "warmup": max(1, args.warmup),
                "rollup": "hourly call_hours; the run's first request fills the 7-day history",
                "target_ms": TARGET_MS,
                "pages": rows,
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpu_count": os.cpu_count(),
                    "load_average": os.getloadavg(),
                    "sqlite": sqlite3.sqlite_version,
                    "sqlalchemy": sqlalchemy.__version__,
                    "database": "sqlite (WAL, synchronous=NORMAL)",
                },
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
