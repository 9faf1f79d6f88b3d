"""What the gateway benchmarks share: the fake teacher and the gateway as two local processes,
free ports, readiness polling, and the percentile they report."""

from __future__ import annotations

import multiprocessing
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    """A localhost port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, deadline_s: float = 90.0) -> None:
    """Poll ``url`` until it answers; RuntimeError after ``deadline_s`` seconds."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Servers:
    """Base URLs (no path) of the running teacher and gateway, the gateway's process id and
    its data directory."""

    teacher: str
    gateway: str
    gateway_pid: int
    data_dir: Path


@contextmanager
def teacher_and_gateway(
    run_teacher: Callable[[int], None], run_gateway: Callable[[int, int, str], None]
) -> Iterator[Servers]:
    """Start ``run_teacher(port)`` and ``run_gateway(port, teacher_port, data_dir)`` in two spawned
    processes (a temporary data dir), wait until both answer, and stop them on exit."""
    context = multiprocessing.get_context("spawn")
    teacher_port, gateway_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        teacher = context.Process(target=run_teacher, args=(teacher_port,), daemon=True)
        gateway = context.Process(
            target=run_gateway, args=(gateway_port, teacher_port, data_dir), daemon=True
        )
        teacher.start()
        gateway.start()
        try:
            servers = Servers(
                f"http://{HOST}:{teacher_port}",
                f"http://{HOST}:{gateway_port}",
                int(gateway.pid or 0),
                Path(data_dir),
            )
            wait_ready(f"{servers.teacher}/v1/models")
            wait_ready(f"{servers.gateway}/healthz")
            yield servers
        finally:
            for process in (gateway, teacher):
                process.terminate()
                process.join(30)
