"""Error translation at the HTTP boundary: every failure leaves as an OpenAI-format body,
``{"error": {"message", "type", "code", "param"}}``, and is logged once here."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from understudy.errors import InvalidRequest, RateLimited, UnderstudyError, UpstreamError

logger = logging.getLogger(__name__)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_response(error: UnderstudyError) -> JSONResponse:
    """The JSON response for a typed error (with ``Retry-After`` when rate limited)."""
    headers = {}
    if isinstance(error, RateLimited):
        headers["retry-after"] = f"{error.retry_after_s:g}"
    return JSONResponse(error.to_openai(), status_code=error.status_code, headers=headers)


async def _understudy_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnderstudyError)
    level = (
        logging.WARNING
        if isinstance(exc, UpstreamError) or exc.status_code >= 500
        else logging.INFO
    )
    logger.log(
        level,
        "%s %s -> %d %s: %s (%s)",
        request.method,
        request.url.path,
        exc.status_code,
        exc.code,
        exc.message,
        _request_id(request),
    )
    return error_response(exc)


_LOCATIONS = ("body", "query", "path")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    # The parameter's name, as OpenAI's ``param`` gives it: not where FastAPI found it.
    location = ".".join(str(p) for p in first.get("loc", ()) if p not in _LOCATIONS)
    message = (
        f"{location}: {first.get('msg', 'invalid request')}" if location else "invalid request"
    )
    return await _understudy_error(request, InvalidRequest(message, param=location or None))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error = UnderstudyError(
        exc.detail if exc.status_code != 404 else f"no route {request.method} {request.url.path}"
    )
    error.status_code = exc.status_code
    error.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    error.code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    response = await _understudy_error(request, error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Register the translators for typed errors, validation errors and HTTP errors (404, 405)."""
    app.add_exception_handler(UnderstudyError, _understudy_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
