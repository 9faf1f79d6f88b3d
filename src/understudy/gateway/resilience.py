"""Staying up when the teacher or the traffic misbehaves: retry backoff, a circuit breaker per
upstream, and a concurrency limit with a bounded queue.

All state here lives on the gateway's event loop (one thread), so it needs no locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from enum import StrEnum

from starlette.types import ASGIApp, Receive, Scope, Send

from understudy.errors import RateLimited, UpstreamUnavailable

logger = logging.getLogger(__name__)

# Upstream answers worth retrying: rate limited, or a server-side failure that may be transient.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# Only API traffic is queued and limited; the dashboard, metrics and health stay reachable.
LIMITED_PREFIX = "/v1/"


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential with full jitter
    (uniform in ``[0, min(max_s, base_s * 2**attempt)]``), so retrying clients spread out."""
    return rng.uniform(0.0, min(max_s, base_s * 2**attempt))


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait an upstream asked for, in seconds: ``retry-after-ms`` (OpenAI's), or
    ``Retry-After`` as seconds or an HTTP date; None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class CircuitState(StrEnum):
    """Closed: calls go through. Open: calls fail fast. Half-open: one probe call may pass."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failures`` consecutive upstream failures; after ``cooldown_s`` seconds one
    probe call is let through, and its outcome closes or re-opens the circuit.

    A probe whose outcome never arrives (its caller was cancelled) stops blocking after another
    ``cooldown_s``, so the breaker cannot stay half-open forever.
    """

    def __init__(
        self,
        name: str,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.consecutive_failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> CircuitState:
        """The state as of now."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self.clock() - self._opened_at < self.cooldown_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def before_call(self) -> None:
        """Admit a call, or raise ``UpstreamUnavailable`` (503) while the circuit is open."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        now = self.clock()
        probing = self._probe_at is not None and now - self._probe_at < self.cooldown_s
        if state is CircuitState.OPEN or probing:
            assert self._opened_at is not None
            wait = max(0.0, self.cooldown_s - (now - self._opened_at))
            raise UpstreamUnavailable(
                f"upstream {self.name} is unavailable after {self.consecutive_failures} "
                f"consecutive failures; next try in {wait:.0f} s"
            )
        self._probe_at = now  # half-open: this call is the probe

    def record_success(self) -> None:
        """The upstream answered (any status below 500): close the circuit."""
        if self._opened_at is not None:
            logger.warning("upstream %s answered again: circuit closed", self.name)
        self.consecutive_failures = 0
        self._opened_at = None
        self._probe_at = None

    def record_failure(self) -> None:
        """The upstream failed (5xx, timeout, connection error); open the circuit at the
        threshold, or re-open it when a probe failed."""
        self.consecutive_failures += 1
        probe_failed = self._probe_at is not None
        if probe_failed or self.consecutive_failures >= self.failures:
            if self._opened_at is None or probe_failed:
                logger.warning(
                    "upstream %s failed %d times in a row: circuit open for %.0f s",
                    self.name,
                    self.consecutive_failures,
                    self.cooldown_s,
                )
            self._opened_at = self.clock()
            self._probe_at = None


class ConcurrencyLimitMiddleware:
    """At most ``max_concurrent`` API requests run at once and ``max_queued`` wait for a slot;
    a request beyond both gets 429 with ``Retry-After`` in OpenAI error format, so memory stays
    bounded however fast clients send. A slot is held until the response (streamed or not) is
    complete."""

    def __init__(
        self, app: ASGIApp, max_concurrent: int, max_queued: int, retry_after_s: float
    ) -> None:
        self.app = app
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIX):
            await self.app(scope, receive, send)
            return
        if self._slots.locked() and self.waiting >= self.max_queued:
            await self._reject(send)
            return
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()

    async def _reject(self, send: Send) -> None:
        error = RateLimited(
            "the gateway is at its concurrency limit and its queue is full; retry later",
            retry_after_s=self.retry_after_s,
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", f"{error.retry_after_s:g}".encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(error.to_openai()).encode()})
