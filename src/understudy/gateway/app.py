"""``create_app``: the gateway's FastAPI application, wired from settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from understudy import __version__
from understudy.dashboard import router as dashboard_router
from understudy.gateway import admin, chat, classify, feedback, health, models
from understudy.gateway.auth import AuthMiddleware, KeyCache
from understudy.gateway.errors import install_error_handlers
from understudy.gateway.middleware import RequestIdMiddleware
from understudy.gateway.resilience import ConcurrencyLimitMiddleware
from understudy.gateway.students import StudentPool
from understudy.gateway.upstream import Upstream
from understudy.metrics import install_metrics
from understudy.privacy import Redactor
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.store.call_log import CallLog


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """The gateway app. ``app.state`` holds ``settings``, ``store``, ``upstream``, the serving
    ``students``, the ``background`` tasks (audits) still running and, while the app is served,
    the ``call_log`` that answered calls are written through.

    A store passed in stays open after shutdown (its owner closes it); one opened here from
    ``settings`` is closed with the app.
    """
    settings = settings or Settings()
    owns_store = store is None
    store = store or open_store(settings)
    upstream = Upstream(settings)
    students = StudentPool(
        store,
        ModelRegistry(settings.models_dir),
        refresh_s=settings.model_refresh_s,
        max_batch=settings.student_max_batch,
        max_wait_ms=settings.student_batch_wait_ms,
    )
    # Audits and other work that outlives a response; awaited at shutdown so none is lost.
    background: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Started here, not in create_app, so an app that is never served starts no thread.
        call_log = await anyio.to_thread.run_sync(CallLog, store, settings.journal_dir)
        app.state.call_log = call_log
        await students.warm_up()
        yield
        if background:
            await asyncio.wait(set(background), timeout=settings.upstream_timeout_s)
        await students.close()
        await upstream.aclose()
        await anyio.to_thread.run_sync(call_log.close)
        if owns_store:
            store.close()

    app = FastAPI(
        title="understudy",
        version=__version__,
        summary="OpenAI-compatible gateway that shadows an LLM classifier",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.upstream = upstream
    app.state.students = students
    app.state.background = background
    app.state.audits_in_flight = 0  # see student_path.audit_in_background
    app.state.redactor = Redactor.from_settings(settings)
    install_error_handlers(app)
    # Innermost first: only authenticated requests take a concurrency slot, and the request id
    # (outside both) also marks their 401/403/429 answers.
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        max_concurrent=settings.max_concurrent_requests,
        max_queued=settings.max_queued_requests,
        retry_after_s=settings.queue_retry_after_s,
    )
    app.state.keys = KeyCache(store, settings.auth_cache_ttl_s)
    app.add_middleware(AuthMiddleware, keys=app.state.keys, settings=settings)
    app.add_middleware(RequestIdMiddleware)
    # Added after RequestIdMiddleware so it wraps it and also counts the 500s that one renders.
    install_metrics(app, store, settings.live_window)
    for module in (chat, classify, models, feedback, health, admin):
        app.include_router(module.router)
    app.include_router(dashboard_router)
    return app
