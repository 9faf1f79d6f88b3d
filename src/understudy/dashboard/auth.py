"""The dashboard's access check: the one place where ``/ui`` decides who may look and act.

Every dashboard route depends on ``require_admin``. The gateway's ``AuthMiddleware``
(``understudy.gateway.auth``) already turns away non-admin keys from ``/ui``; this check repeats
it from the context the middleware left, and fails closed when that context is missing (a
dashboard mounted without the middleware).
"""

from __future__ import annotations

from fastapi import Request

from understudy.errors import Forbidden
from understudy.store.keys import AuthContext, KeyRole


async def require_admin(request: Request) -> None:
    """Admit the request when auth is off or it presented an admin key; else 403."""
    context = getattr(request.state, "auth", None)
    if not isinstance(context, AuthContext):
        raise Forbidden("the dashboard is served only behind the gateway's auth check")
    if context.enabled and context.role is not KeyRole.ADMIN:
        raise Forbidden("the dashboard needs an admin key")
