"""Reading a request's JSON body within the configured size limit."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from understudy.errors import InvalidRequest, PayloadTooLarge


async def read_json_object(request: Request, limit_bytes: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its parsed JSON object; 413 past ``limit_bytes``, 400 if not an object.

    The limit is checked against ``Content-Length`` first and again while reading, so a chunked
    upload cannot grow past it in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit_bytes}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        parsed = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("request body must be a JSON object")
    return raw, parsed
