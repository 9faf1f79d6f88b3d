"""Run the real gateway in a background thread for tests, demos and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from understudy.gateway import create_app
from understudy.settings import Settings
from understudy.store import Store
from understudy.testing.server import serve_in_thread


@contextmanager
def run_gateway(settings: Settings, store: Store | None = None) -> Iterator[str]:
    """Serve ``create_app(settings, store)`` on a free localhost port; yields its base URL
    (ending in ``/v1``, ready for ``openai.OpenAI(base_url=...)``)."""
    with serve_in_thread(create_app(settings, store)) as root:
        yield f"{root}/v1"
