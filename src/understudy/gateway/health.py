"""``GET /healthz``: liveness plus a database round trip."""

from __future__ import annotations

import anyio
import sqlalchemy as sa
from fastapi import APIRouter, Request

from understudy.gateway.state import store_of

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:
    """``{"status": "ok"}`` when the gateway can reach its database (else a 500 error body)."""
    store = store_of(request)

    def ping() -> None:
        with store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    await anyio.to_thread.run_sync(ping)
    return {"status": "ok"}
