"""Connecting to the database and migrating it to the newest schema."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from understudy.settings import Settings
from understudy.store.call_log import wait_for_pending_calls
from understudy.store.repository import Store

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Milliseconds SQLite waits for another writer's lock before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Any fixed 64-bit number; identifies understudy's migration lock among PostgreSQL advisory locks.
MIGRATION_LOCK_KEY = 0x756E6465727374


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
    """An engine for ``url``; SQLite files get their directory created and the pragmas above.
    Its connections wait for the calls this process has journaled but not yet committed (see
    ``understudy.store.call_log``), so a reader never misses a call that was answered. Database
    errors do not repeat the statement's parameters (callers' texts) in their message: they end
    up in logs, unredacted and possibly megabytes long."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    else:
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False}, hide_parameters=True
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    database_url = str(engine.url)
    sa.event.listen(engine, "checkout", lambda *_: wait_for_pending_calls(database_url))
    return engine


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection held under a lock that serialises migrations across processes.

    The gateway and the worker start together against a fresh database; without the lock both
    would try to create the same tables. SQLite locks a file beside the database, PostgreSQL
    takes an advisory lock; other backends run unlocked.
    """
    backend = engine.url.get_backend_name()
    database = engine.url.database
    if backend == "sqlite" and database and database != ":memory:":
        with open(f"{database}.migrate.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                with engine.begin() as conn:
                    yield conn
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        return
    with engine.begin() as conn:
        if backend == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        yield conn


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest migration (a no-op when it is current); safe to call
    from several processes at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _migration_lock(engine) as conn:
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
