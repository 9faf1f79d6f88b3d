"""Typed errors raised by the library; the HTTP boundary translates them to OpenAI-format bodies.

Each error carries the HTTP status, the OpenAI error ``type`` and a stable machine ``code`` so that
the gateway can render ``{"error": {"message", "type", "code", "param"}}`` in one place.
"""

from __future__ import annotations


class UnderstudyError(Exception):
    """Base class: a failure with a message meant for the caller."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_openai(self) -> dict[str, dict[str, str | None]]:
        """The error as an OpenAI-format JSON body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        }


class InvalidRequest(UnderstudyError):
    """The request is malformed or violates a documented limit."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"


class NotFound(InvalidRequest):
    """A route, request id, task or model that does not exist."""

    status_code = 404
    code = "not_found"


class UnknownTask(NotFound):
    """No task with this key (and version) is registered."""

    code = "unknown_task"


class UnknownRequest(NotFound):
    """No logged call has this request id."""

    code = "unknown_request"


class NoStudent(InvalidRequest):
    """The task has no serving student yet (it is still learning from the teacher)."""

    status_code = 409
    code = "no_student"


class Unauthorized(UnderstudyError):
    """Missing or wrong API key."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(UnderstudyError):
    """The key is valid but not allowed to do this (e.g. a client key on an admin route)."""

    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


class RateLimited(UnderstudyError):
    """Too many requests in flight; retry after ``retry_after_s`` seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(UnderstudyError):
    """The teacher (upstream LLM API) failed: connection error, 5xx or an unreadable answer."""

    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    """The teacher did not answer within the configured timeout."""

    status_code = 504
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    """The teacher is known to be down (circuit open) and no student can answer."""

    status_code = 503
    code = "upstream_unavailable"


class CallNotLogged(UnderstudyError):
    """The gateway could not record the call (its journal cannot be written, e.g. a full disk),
    so it does not answer it: an answer is only given for a call that is logged."""

    status_code = 503
    code = "call_log_unavailable"


class KeysUnavailable(UnderstudyError):
    """The API keys could not be read (the database fails) and none were read before, so the
    gateway cannot tell who may call: it refuses rather than opening up."""

    status_code = 503
    code = "keys_unavailable"


class ModelError(UnderstudyError):
    """A student artifact is missing, corrupt or incompatible with its task."""

    code = "model_error"


class ConfigurationError(UnderstudyError):
    """A setting is missing or inconsistent; the message says how to fix it."""

    code = "configuration_error"


class InsufficientData(InvalidRequest):
    """Too few labelled examples (or too few distinct labels) to train or evaluate a student."""

    code = "insufficient_data"
