"""The OpenAI-compatible gateway: ``create_app()`` and its routers (one module per resource)."""

from understudy.gateway.app import create_app

__all__ = ["create_app"]
