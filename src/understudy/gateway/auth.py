"""API-key authentication: the one place where the gateway decides who may call what.

Auth is off until the first key is created (``understudy keys create``); from then on every
route but ``/healthz`` needs a key, also after every key was revoked (revoking the last key must
not open the gateway). Client keys call the API; admin keys also open the dashboard (``/ui``),
the admin API (``/admin``), and ``/metrics`` or ``/v1/feedback`` when the settings say so.

A key is presented as ``Authorization: Bearer <key>`` (what the openai client sends as its
``api_key``), as the password of HTTP Basic auth (what a browser sends for the dashboard), or as
``x-understudy-key: <key>``. The last form leaves ``Authorization`` free for the caller's own
upstream key in pass-through mode (no ``upstream_api_key`` configured). A gateway key that came
in ``Authorization`` is removed from the request before any handler sees it, so it is never
forwarded upstream, logged or stored.

The key list is cached for ``auth_cache_ttl_s`` seconds so the hot path does not read the
database per call; keys are compared by SHA-256 digest in constant time. When the database cannot
be read, the last list read keeps serving (a warning is logged, the read is retried every
``KEY_RETRY_S`` at most); with no list read yet, calls get a 503 ``keys_unavailable``: the
gateway never opens up because its database failed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
from enum import Enum

import anyio
import sqlalchemy as sa
from starlette.types import ASGIApp, Receive, Scope, Send

from understudy.errors import Forbidden, KeysUnavailable, Unauthorized, UnderstudyError
from understudy.settings import Settings
from understudy.store import Store
from understudy.store.keys import (
    AuthContext,
    KeyDigest,
    KeyRole,
    KeySnapshot,
    key_digest,
    key_snapshot,
)

logger = logging.getLogger(__name__)

KEY_HEADER = "x-understudy-key"
# Paths anyone may call: liveness probes must work without credentials.
OPEN_PREFIXES = ("/health",)
DASHBOARD_PREFIX = "/ui"
ADMIN_API_PREFIX = "/admin"
ADMIN_PREFIXES = (DASHBOARD_PREFIX + "/", ADMIN_API_PREFIX + "/")
REALM = 'realm="understudy"'
KEY_RETRY_S = 1.0
"""Least seconds between re-reads of the keys while the database fails."""


class Access(Enum):
    """What a route needs."""

    OPEN = "open"
    CLIENT = "client"
    ADMIN = "admin"


def required_access(path: str, settings: Settings) -> Access:
    """The access a request path needs (see the module docstring)."""
    if path.startswith(OPEN_PREFIXES):
        return Access.OPEN
    if path.startswith(ADMIN_PREFIXES) or path in (DASHBOARD_PREFIX, ADMIN_API_PREFIX):
        return Access.ADMIN
    if path == "/metrics" and settings.metrics_require_admin:
        return Access.ADMIN
    if path == "/v1/feedback" and settings.feedback_require_admin:
        return Access.ADMIN
    return Access.CLIENT


def presented_key(headers: dict[bytes, bytes]) -> tuple[str | None, bool]:
    """The key a request presents and whether it came in ``Authorization`` (then it is ours
    and must not be forwarded upstream)."""
    explicit = headers.get(KEY_HEADER.encode())
    if explicit:
        return explicit.decode("latin-1").strip(), False
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), True
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, True
        return decoded.partition(":")[2] or None, True
    return None, False


def match_key(snapshot: KeySnapshot, key: str) -> KeyDigest | None:
    """The active key equal to ``key``; every stored digest is compared in constant time, and
    without stopping early, so timing does not tell how close a guess came."""
    digest = key_digest(key)
    found: KeyDigest | None = None
    for candidate in snapshot.active:
        if hmac.compare_digest(candidate.digest, digest):
            found = candidate
    return found


class KeyCache:
    """The store's key snapshot, re-read at most every ``ttl_s`` seconds (see the module
    docstring for what happens when the database fails)."""

    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._snapshot: KeySnapshot | None = None
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()

    async def snapshot(self) -> KeySnapshot:
        """The current snapshot; one request re-reads it when stale while the others wait.

        Raises ``KeysUnavailable`` when the keys were never read and cannot be now.
        """
        if self._snapshot is not None and time.monotonic() < self._fresh_until:
            return self._snapshot
        async with self._lock:
            if self._snapshot is None or time.monotonic() >= self._fresh_until:
                return await self._read()
            return self._snapshot

    async def _read(self) -> KeySnapshot:
        try:
            self._snapshot = await anyio.to_thread.run_sync(key_snapshot, self.store)
            self._fresh_until = time.monotonic() + self.ttl_s
            return self._snapshot
        except sa.exc.SQLAlchemyError as error:
            if self._snapshot is None:
                logger.error("could not read the API keys, refusing calls: %s", error)
                raise KeysUnavailable(
                    "the gateway cannot read its API keys (its database fails); retry later"
                ) from error
            logger.warning("could not re-read the API keys, using the last ones read: %s", error)
            self._fresh_until = time.monotonic() + max(self.ttl_s, KEY_RETRY_S)
            return self._snapshot

    def invalidate(self) -> None:
        """Forget the snapshot so the next request reads the store (after creating a key)."""
        self._snapshot = None


class AuthMiddleware:
    """Rejects requests without a valid key (401) or with a client key on an admin route (403),
    in OpenAI error format; sets ``request.state.auth`` for the routes that pass."""

    def __init__(self, app: ASGIApp, keys: KeyCache, settings: Settings) -> None:
        self.app = app
        self.keys = keys
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = required_access(scope["path"], self.settings)
        if access is Access.OPEN:  # health answers without reading the keys
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            snapshot = await self.keys.snapshot()
        except KeysUnavailable as error:
            await _reject(send, error)
            return
        if not snapshot.enabled:
            state["auth"] = AuthContext(enabled=False)
            await self.app(scope, receive, send)
            return
        key, in_authorization = presented_key(dict(scope["headers"]))
        found = match_key(snapshot, key) if key else None
        if found is None:
            message = (
                "invalid or revoked API key"  # never echo the key
                if key
                else "missing API key: send 'Authorization: Bearer <key>' "
                "(create one with `understudy keys create`)"
            )
            await _reject(send, Unauthorized(message))
            return
        if access is Access.ADMIN and found.role is not KeyRole.ADMIN:
            await _reject(send, Forbidden("this route needs an admin key"))
            return
        if in_authorization:
            scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"authorization"]
        state["auth"] = AuthContext(enabled=True, role=found.role, key_id=found.id)
        await self.app(scope, receive, send)


async def _reject(send: Send, error: UnderstudyError) -> None:
    headers = [(b"content-type", b"application/json")]
    if error.status_code == 401:
        # Basic makes a browser ask for the key on the dashboard; API clients use Bearer.
        headers.append((b"www-authenticate", f"Bearer {REALM}".encode()))
        headers.append((b"www-authenticate", f"Basic {REALM}".encode()))
    body = json.dumps(error.to_openai()).encode()
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
