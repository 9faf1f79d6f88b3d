"""The store: SQLAlchemy Core tables, Alembic migrations and the repository (``Store``).

``open_store(settings)`` connects, migrates to the newest schema (idempotent) and returns the
``Store`` through which every part of understudy reads and writes.
"""

from understudy.store.engine import migrate, open_store
from understudy.store.records import (
    CallKind,
    CallRecord,
    CallRow,
    EventRow,
    StudentRun,
    TaskRow,
    TaskState,
)
from understudy.store.repository import Store, is_heldout

__all__ = [
    "CallKind",
    "CallRecord",
    "CallRow",
    "EventRow",
    "Store",
    "StudentRun",
    "TaskRow",
    "TaskState",
    "is_heldout",
    "migrate",
    "open_store",
]
