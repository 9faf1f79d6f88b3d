"""The dashboard's access check: the one place where ``/ui`` decides who may look and act.

Every dashboard route depends on ``require_admin``. Until admin keys exist it admits every
request (the gateway binds to localhost by default); the auth work replaces its body with the
admin-key check and raises ``understudy.errors.Unauthorized``/``Forbidden`` there, and nothing
else in the dashboard needs to change.
"""

from __future__ import annotations

from fastapi import Request


async def require_admin(request: Request) -> None:
    """Admit the request to the dashboard (currently: everyone; see the module docstring)."""
    del request  # the admin-key check will read the request's credentials
