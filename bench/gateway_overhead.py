"""Latency the gateway adds: the same call sent to the fake teacher directly and through
understudy, interleaved, p50/p99 per mode.

Timed is one HTTP round trip from a keep-alive ``httpx`` client, from sending the request to
having read the whole response (for streams: the final ``[DONE]`` event). Through the gateway
this includes parsing, task detection and input extraction, the forward to the teacher, and the
call's commit to SQLite (WAL, synchronous=NORMAL) before the answer leaves. The fake teacher,
the gateway and this client run in three separate processes (uvicorn, one worker each), so they
do not share a GIL. Direct and gateway calls alternate, so drift affects both alike; warm-up
calls are excluded. Target: <= 2 ms added at p50.

    .venv/bin/python bench/gateway_overhead.py              # -> bench/results/gateway_overhead.json
    .venv/bin/python bench/gateway_overhead.py --calls 2000 --modes classification
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from local_servers import percentile, teacher_and_gateway
from machine import cpu_model

RESULTS = Path(__file__).parent / "results" / "gateway_overhead.json"
TARGET_ADDED_P50_MS = 2.0
MODES = ("classification", "classification-stream", "passthrough")
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["negative", "positive"]},
        "sarcastic": {"type": "boolean"},
    },
    "required": ["sentiment", "sarcastic"],
    "additionalProperties": False,
}


def label_fn(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The teacher's answer: a keyword rule (its cost is negligible next to HTTP)."""
    return {"sentiment": "positive" if "good" in text else "negative", "sarcastic": "!" in text}


def _run_teacher(port: int) -> None:
    import uvicorn

    from understudy.testing.fake_teacher import FakeTeacher

    app = FakeTeacher(label_fn).create_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _run_gateway(port: int, teacher_port: int, data_dir: str) -> None:
    import uvicorn

    from understudy.gateway import create_app
    from understudy.settings import Settings

    settings = Settings(
        upstream_base_url=f"http://127.0.0.1:{teacher_port}/v1", data_dir=Path(data_dir)
    )
    uvicorn.run(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def _body(mode: str, i: int) -> dict[str, Any]:
    text = f"Classify this review:\n\nreview number {i}: {'good' if i % 2 else 'bad'} film"
    body: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": text}]}
    if mode.startswith("classification"):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "sentiment", "schema": SCHEMA, "strict": True},
        }
    if mode.endswith("stream"):
        body["stream"] = True
    return body


def _timed_call(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    """Milliseconds for one call, response read to the end."""
    start = time.perf_counter()
    if body.get("stream"):
        with client.stream("POST", url, json=body) as response:
            for _ in response.iter_bytes():
                pass
            status = response.status_code
    else:
        response = client.post(url, json=body)
        status = response.status_code
    elapsed = (time.perf_counter() - start) * 1000
    if status != 200:
        raise RuntimeError(f"{url} answered {status}")
    return elapsed


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(
    mode: str,
    direct_url: str,
    gateway_url: str,
    calls: int,
    warmup: int,
    gateway_process: psutil.Process,
) -> dict[str, Any]:
    """Interleaved direct/gateway timings for one mode, with percentiles in ms, and the gateway
    process's CPU time per call (all its threads; less sensitive to a busy machine than wall
    time)."""
    direct: list[float] = []
    through: list[float] = []
    cpu_start = 0.0
    with httpx.Client(timeout=30.0) as client:
        for i in range(warmup + calls):
            if i == warmup:
                cpu_start = _cpu_s(gateway_process)
            body = _body(mode, i)
            d = _timed_call(client, f"{direct_url}/chat/completions", body)
            g = _timed_call(client, f"{gateway_url}/chat/completions", body)
            if i >= warmup:
                direct.append(d)
                through.append(g)
    gateway_cpu_ms = (_cpu_s(gateway_process) - cpu_start) / calls * 1000
    result: dict[str, Any] = {
        "mode": mode,
        "calls": calls,
        "warmup": warmup,
        "gateway_cpu_ms_per_call": gateway_cpu_ms,
    }
    for name, values in (("direct", direct), ("gateway", through)):
        result[name] = {
            "p50_ms": statistics.median(values),
            "p99_ms": percentile(values, 0.99),
            "mean_ms": statistics.fmean(values),
        }
    result["added_p50_ms"] = result["gateway"]["p50_ms"] - result["direct"]["p50_ms"]
    result["added_p99_ms"] = result["gateway"]["p99_ms"] - result["direct"]["p99_ms"]
    return result


def machine_info() -> dict[str, Any]:
    """CPU, cores, Python and the versions of the libraries on the timed path."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": "n/a (no model on this path)",
        "versions": {
            name: version(name)
            for name in ("fastapi", "starlette", "uvicorn", "httpx", "sqlalchemy", "understudy")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per mode and side")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls first")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args()

    with teacher_and_gateway(_run_teacher, _run_gateway) as servers:
        results = [
            measure(
                mode,
                f"{servers.teacher}/v1",
                f"{servers.gateway}/v1",
                args.calls,
                args.warmup,
                psutil.Process(servers.gateway_pid),
            )
            for mode in args.modes
        ]

    table = Table(title="gateway overhead (ms per call, fake teacher, keep-alive client)")
    for column in (
        "mode",
        "direct p50",
        "gateway p50",
        "added p50",
        "direct p99",
        "gateway p99",
        "added p99",
        "gateway CPU/call",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["mode"],
            f"{r['direct']['p50_ms']:.2f}",
            f"{r['gateway']['p50_ms']:.2f}",
            f"{r['added_p50_ms']:.2f}",
            f"{r['direct']['p99_ms']:.2f}",
            f"{r['gateway']['p99_ms']:.2f}",
            f"{r['added_p99_ms']:.2f}",
            f"{r['gateway_cpu_ms_per_call']:.2f}",
        )
    console = Console()
    console.print(table)
    worst = max(r["added_p50_ms"] for r in results)
    verdict = "meets" if worst <= TARGET_ADDED_P50_MS else "misses"
    console.print(f"worst added p50 {worst:.2f} ms {verdict} the {TARGET_ADDED_P50_MS} ms target")
    console.print(f"machine load (1-minute average) at the end: {os.getloadavg()[0]:.1f}")
    payload = {
        "benchmark": "gateway_overhead",
        "measured": "one HTTP round trip per call (response fully read), direct vs via gateway",
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
        "created_at": datetime.now(UTC).isoformat(),
        "machine": machine_info(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
