"""Typed access to what ``create_app`` puts on ``app.state``."""

from __future__ import annotations

from typing import cast

from fastapi import Request

from understudy.gateway.upstream import Upstream
from understudy.privacy import Redactor
from understudy.settings import Settings
from understudy.store import Store
from understudy.store.call_log import CallLog


def settings_of(request: Request) -> Settings:
    """The gateway's settings."""
    return cast(Settings, request.app.state.settings)


def store_of(request: Request) -> Store:
    """The gateway's store."""
    return cast(Store, request.app.state.store)


def call_log_of(request: Request) -> CallLog:
    """The write-behind log answered calls are recorded through."""
    return cast(CallLog, request.app.state.call_log)


def upstream_of(request: Request) -> Upstream:
    """The gateway's pooled client to the teacher."""
    return cast(Upstream, request.app.state.upstream)


def redactor_of(request: Request) -> Redactor | None:
    """The redaction applied to calls before they are stored (None when it is off)."""
    return cast(Redactor | None, getattr(request.app.state, "redactor", None))


def request_id_of(request: Request) -> str:
    """The id ``RequestIdMiddleware`` gave this request."""
    return cast(str, request.state.request_id)
