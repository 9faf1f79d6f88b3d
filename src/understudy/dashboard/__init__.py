"""The web dashboard under ``/ui``: tasks, a task's charts and controls, the review queue, and
the calls browser; server-rendered from ``understudy.store.queries``."""

from understudy.dashboard.views import router

__all__ = ["router"]
