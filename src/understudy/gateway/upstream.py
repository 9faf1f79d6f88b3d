"""The HTTP client to the upstream (the teacher): pooled connections, timeouts, bounded retries
with jittered backoff, a circuit breaker, typed errors. httpx's client API over aiohttp on the
wire (``understudy.gateway.aiohttp_transport`` says why)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Mapping

import httpx

from understudy.errors import UpstreamError, UpstreamTimeout
from understudy.gateway.aiohttp_transport import AiohttpTransport
from understudy.gateway.resilience import (
    RETRY_STATUSES,
    CircuitBreaker,
    backoff_s,
    retry_after_s,
)
from understudy.settings import Settings

logger = logging.getLogger(__name__)

_MAX_CACHED_URLS = 16
# Client request headers worth forwarding to the upstream (auth is handled separately).
FORWARDED_REQUEST_HEADERS = ("openai-organization", "openai-project", "openai-beta", "user-agent")
# Upstream response headers returned to the client with the upstream's body.
RETURNED_RESPONSE_HEADERS = (
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
    "openai-organization",
    "retry-after",
)
# Things shaped like API keys (OpenAI's ``sk-...``, understudy's ``usk_...``, bearer tokens),
# masked in any upstream text quoted back to a client or a log.
_SECRET_PATTERN = re.compile(r"(?i)\b(?:sk|usk)[-_][A-Za-z0-9_-]{6,}|(?<=bearer )[^\s\"',]+")


def mask_secrets(text: str) -> str:
    """``text`` with anything shaped like an API key replaced by ``****``."""
    return _SECRET_PATTERN.sub("****", text)


def returned_headers(response: httpx.Response) -> dict[str, str]:
    """The upstream response headers passed back to the client (ids, rate limits)."""
    return {
        name: value
        for name, value in response.headers.items()
        if name in RETURNED_RESPONSE_HEADERS or name.startswith("x-ratelimit-")
    }


class Upstream:
    """A pooled async client for the teacher's OpenAI-compatible API."""

    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``transport`` replaces the default (aiohttp on the wire, see ``aiohttp_transport``),
        e.g. with ``httpx.MockTransport`` in tests."""
        self.api_key = (
            settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        )
        limits = httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_connections,
        )
        # Requests go straight to the transport: httpx's client layer (URL merging, cookies,
        # auth and redirect handling, none of which a proxy to one API needs) cost more CPU per
        # call than the transport itself.
        self.transport = transport or AiohttpTransport(limits)
        self.base_url = settings.upstream_base_url.rstrip("/")
        # Parsed URLs of the few fixed paths (chat completions, models); bounded, because
        # ``/models/{id}`` paths come from clients.
        self._urls: dict[str, httpx.URL] = {}
        self.timeout = httpx.Timeout(
            settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
        ).as_dict()
        self.retries = settings.upstream_retries
        self.backoff_base_s = settings.upstream_backoff_base_s
        self.backoff_max_s = settings.upstream_backoff_max_s
        self.retry_after_max_s = settings.upstream_retry_after_max_s
        self.breaker = CircuitBreaker(
            settings.upstream_base_url, settings.breaker_failures, settings.breaker_cooldown_s
        )
        # Jitter only needs to decorrelate clients, not to be reproducible.
        self._rng = random.Random()

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self.transport.aclose()

    def headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        """Headers for an upstream request: our API key if configured, else the caller's
        ``Authorization`` (so callers may bring their own key), plus the forwarded ones."""
        headers = {name: incoming[name] for name in FORWARDED_REQUEST_HEADERS if name in incoming}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        elif "authorization" in incoming:
            headers["authorization"] = incoming["authorization"]
        return headers

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None, stream: bool
    ) -> httpx.Response:
        """Send one request; with ``stream`` the body is left unread for the caller to iterate.

        429, 5xx and connection failures are retried up to ``upstream_retries`` times with
        jittered exponential backoff, or after the upstream's ``Retry-After`` when it is at
        most ``upstream_retry_after_max_s``. All retries happen here, before the caller has
        sent a byte to its client. The last answer is returned whatever its status.

        The circuit breaker counts each call once, by its final outcome. Raises
        ``UpstreamUnavailable`` (503) while the circuit is open, ``UpstreamTimeout``
        (504) or ``UpstreamError`` (502) when no answer comes back.
        """
        if body is not None:
            headers = {**headers, "content-type": "application/json"}
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(f"{self.base_url}{path}")
            if len(self._urls) < _MAX_CACHED_URLS:
                self._urls[path] = url
        request = httpx.Request(
            method,
            url,
            headers=headers,
            content=body,
            extensions={"timeout": self.timeout},
        )
        self.breaker.before_call()
        attempt = 0
        while True:
            try:
                response = await self.transport.handle_async_request(request)
                if not stream:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.HTTPError as exc:
                error, retryable = self._failure(exc)
                if not retryable or attempt >= self.retries:
                    if not isinstance(exc, httpx.PoolTimeout):
                        self.breaker.record_failure()
                    raise error from exc
                wait = backoff_s(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
            else:
                retry_wait = self._retry_wait(response, attempt)
                if retry_wait is None:
                    if response.status_code >= 500:
                        self.breaker.record_failure()
                    else:
                        self.breaker.record_success()
                    return response
                wait = retry_wait
                await response.aclose()
            logger.info(
                "upstream %s %s failed (attempt %d); retrying in %.2f s",
                method,
                path,
                attempt + 1,
                wait,
            )
            await asyncio.sleep(wait)
            attempt += 1

    def _failure(self, exc: httpx.HTTPError) -> tuple[UpstreamError, bool]:
        """The typed error for a request that got no answer, and whether to retry it.

        Connection failures (refused, reset, dropped before an answer, connect timeouts) are
        retried; a read timeout is not (the upstream may still be working on it, and waiting
        the whole timeout again doubles the client's wait). Running out of pooled connections
        is our own congestion, not the upstream's failure: not retried, and (in ``send``) not
        counted by the breaker.
        """
        if isinstance(exc, httpx.PoolTimeout):
            return UpstreamTimeout("no free upstream connection in time: PoolTimeout"), False
        if isinstance(exc, httpx.ConnectTimeout):
            return UpstreamTimeout("upstream timed out: ConnectTimeout"), True
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"upstream timed out: {type(exc).__name__}"), False
        message = mask_secrets(f"upstream unreachable: {type(exc).__name__}: {exc}")
        return UpstreamError(message), isinstance(exc, httpx.TransportError)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying this answer, or None to return it."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        asked = retry_after_s(response.headers)
        if asked is None:
            return backoff_s(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
        return asked if asked <= self.retry_after_max_s else None


def upstream_failure(response: httpx.Response, body: bytes) -> UpstreamError:
    """The 502 error for an upstream 5xx answer, quoting the upstream's own message."""
    message = mask_secrets(body[:300].decode(errors="replace"))
    return UpstreamError(f"upstream answered {response.status_code}: {message}")
