"""ASGI middleware: a request id on every response, and the catch-all for unexpected errors.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass through untouched
and the per-request cost stays in microseconds.
"""

from __future__ import annotations

import json
import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from understudy.errors import UnderstudyError

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-understudy-request-id"


def new_request_id() -> str:
    """A fresh request id, e.g. ``us-3f2a...`` (32 hex digits after the prefix)."""
    return f"us-{uuid.uuid4().hex}"


class RequestIdMiddleware:
    """Assigns ``request.state.request_id`` and adds it as ``x-understudy-request-id`` to the
    response; turns an exception that escaped every handler into an OpenAI-format 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error in %s %s (%s)", scope["method"], scope["path"], request_id
            )
            if started:  # the status line is gone; all we can do is end the connection
                raise
            body = json.dumps(UnderstudyError("internal error; see the gateway log").to_openai())
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body.encode()})
