"""Connecting to the database and migrating it to the newest schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from understudy.settings import Settings
from understudy.store.repository import Store

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Milliseconds SQLite waits for another writer's lock before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; synchronous=NORMAL is durable across process
    crashes in WAL mode (only an OS crash may lose the last commits) and much faster than FULL."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their directory created and the pragmas above."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest migration (a no-op when it is current)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def open_store(settings: Settings | None = None) -> Store:
    """Connect to the configured database, migrate it, and return the repository."""
    settings = settings or Settings()
    engine = create_engine(settings.resolved_database_url)
    migrate(engine)
    return Store(
        engine,
        heldout_fraction=settings.heldout_fraction,
        template_min_calls=settings.template_min_calls,
    )
