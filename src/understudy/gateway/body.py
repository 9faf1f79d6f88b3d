"""Reading a request's JSON body within the configured size limit, and validating it."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from understudy.errors import InvalidRequest, PayloadTooLarge

Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], payload: dict[str, Any]) -> Model:
    """``payload`` as a ``model``; the first validation error becomes an ``InvalidRequest`` whose
    ``param`` names the field (``body`` for an error about the whole object)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"{field}: {first['msg']}", param=field) from None


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
    parsed = parse_json(raw)
    if parsed is None:
        raise InvalidRequest("request body is not valid JSON (or nested too deeply)")
    if not isinstance(parsed, dict):
        raise InvalidRequest("request body must be a JSON object")
    return raw, parsed


# A ``\uD800``-``\uDFFF`` escape: the only way JSON can carry a lone surrogate, which is valid
# JSON but not valid Unicode (SQLite, UTF-8 encoders and HTTP headers all reject it).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON with lone surrogates replaced by U+FFFD, or None when it is not
    JSON or nests deeper than the parser's recursion limit.

    Only the parsed copy (stored, shown to students) is repaired; callers forward ``raw``
    untouched to the upstream.
    """
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if _SURROGATE_ESCAPE.search(raw) is None:  # the common case: no escape, no walk
        return parsed
    return _replace_lone_surrogates(parsed)


# Valid pairs were already joined by the JSON parser; whatever surrogate is left is alone.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


def _replace_lone_surrogates(value: Any) -> Any:
    """``value`` with every string (keys included) made valid Unicode; iterative, since the
    tree may be as deep as the JSON parser allows."""
    if isinstance(value, str):
        return _clean(value)
    root: list[Any] = [value]
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, child in items:
            if isinstance(child, str):
                child = _clean(child)
            elif isinstance(child, dict | list):
                stack.append(child)
            node[_clean(key) if isinstance(key, str) else key] = child
    return root[0]
