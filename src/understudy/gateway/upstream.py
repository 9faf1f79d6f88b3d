"""The HTTP client to the upstream (the teacher): pooled connections, timeouts, typed errors."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from understudy.errors import UpstreamError, UpstreamTimeout
from understudy.settings import Settings

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
        self.api_key = (
            settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        )
        self.client = httpx.AsyncClient(
            base_url=settings.upstream_base_url,
            timeout=httpx.Timeout(
                settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
            ),
            limits=httpx.Limits(
                max_connections=settings.upstream_max_connections,
                max_keepalive_connections=settings.upstream_max_connections,
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self.client.aclose()

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

        Raises ``UpstreamTimeout`` (504) or ``UpstreamError`` (502) when no answer comes back.
        """
        if body is not None:
            headers = {**headers, "content-type": "application/json"}
        request = self.client.build_request(method, path, headers=headers, content=body)
        try:
            return await self.client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream unreachable: {type(exc).__name__}: {exc}") from exc


def upstream_failure(response: httpx.Response, body: bytes) -> UpstreamError:
    """The 502 error for an upstream 5xx answer, quoting the upstream's own message."""
    message = body[:300].decode(errors="replace")
    return UpstreamError(f"upstream answered {response.status_code}: {message}")
