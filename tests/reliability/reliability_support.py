"""Shared pieces of the reliability tests: the fake teacher's rule, request helpers and a
gateway in a subprocess."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from understudy.settings import Settings

SENTIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}


def label_fn(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The fake teacher's rule: "good" in the text means positive."""
    del schema
    return {"sentiment": "positive" if "good" in text else "negative"}


def sentiment_request(text: str, **extra: Any) -> dict[str, Any]:
    """A chat-completion body asking the sentiment task about ``text``."""
    return {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": text}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "sentiment", "schema": SENTIMENT_SCHEMA, "strict": True},
        },
        **extra,
    }


def poll(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait until ``condition()`` holds; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def env_of(settings: Settings) -> dict[str, str]:
    """The environment of a subprocess that runs with ``settings`` and starts no worker."""
    return {**os.environ, **settings.to_env(), "UNDERSTUDY_START_WORKER": "false"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """``uvicorn --factory understudy.gateway:create_app`` in a subprocess, output to a file.

    With ``max_file_bytes`` no file the process writes can grow beyond that size (``RLIMIT_FSIZE``;
    a write past it fails with EFBIG, as one on a full disk fails with ENOSPC).
    """

    def __init__(self, settings: Settings, log: Path, max_file_bytes: int | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("ab")
        command = [sys.executable, "-m", "uvicorn", "--factory", "understudy.gateway:create_app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]

        def limit_file_size() -> None:
            limit = (max_file_bytes, max_file_bytes)
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)

        self.process = subprocess.Popen(
            command,
            env=env_of(settings),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if max_file_bytes is None else limit_file_size,
        )

        def healthy() -> bool:
            assert self.process.poll() is None, "the gateway exited at start-up"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        poll(healthy, "the gateway to start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=30)
        self.log.close()
