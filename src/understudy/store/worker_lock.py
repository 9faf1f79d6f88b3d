"""One worker per database: the lock a worker holds while it trains students and moves tasks.

Every ``understudy serve`` starts a worker, so replicas sharing a PostgreSQL database (or two
processes on one SQLite file, such as ``understudy worker --once`` beside a running ``serve``)
would otherwise each train the same tasks, publish over each other, and, at start-up, mark the
other's training run as interrupted. SQLite locks a file beside the database; PostgreSQL takes a
session advisory lock on a connection kept for as long as the lock is held, so a worker that dies
lets go with its connection. In-memory SQLite and other backends are not shared: the lock is
always granted.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)

# Any fixed 64-bit number; identifies the worker's lock among PostgreSQL advisory locks.
WORKER_LOCK_KEY = 0x756E646572776B


class WorkerLock:
    """The database's worker lock, taken without waiting: ``acquire`` says whether this process
    holds it now, ``release`` lets it go. ``holder`` describes who has it, for log lines."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        backend = engine.url.get_backend_name()
        database = engine.url.database
        self._lock_path = (
            f"{database}.worker.lock"
            if backend == "sqlite" and database and database != ":memory:"
            else None
        )
        self._postgres = backend == "postgresql"
        self._file: IO[str] | None = None
        self._connection: Connection | None = None
        self._unshared_held = False

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (as of the last ``acquire``)."""
        return self._file is not None or self._connection is not None or self._unshared_held

    def acquire(self) -> bool:
        """Take the lock if it is free; True when this process holds it. Called again while held,
        it checks that a PostgreSQL lock's connection is still alive (the server drops the lock
        with it) and tries to take it again if not."""
        if self._lock_path is not None:
            return self._file is not None or self._lock_file(self._lock_path)
        if self._postgres:
            return self._connection_alive() or self._advisory_lock()
        self._unshared_held = True
        return True

    def release(self) -> None:
        """Let the lock go (a no-op when not held)."""
        self._unshared_held = False
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), _KEY)
                connection.commit()
                connection.close()
            except sa.exc.DBAPIError:
                # The connection is gone, and the server released the lock with it.
                connection.invalidate()

    def taken_elsewhere(self) -> bool:
        """Whether another worker holds the lock now, found out without taking it or writing
        anything (for ``understudy doctor``, the dashboard and ``/metrics``; PostgreSQL reads
        ``pg_locks``): False when this process holds it, and for databases that are not shared."""
        if self.held:
            return False
        if self._lock_path is not None:
            try:
                lock_file = open(self._lock_path)  # noqa: SIM115 - closed below
            except FileNotFoundError:
                return False  # no worker ever ran against this database
            with lock_file:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(lock_file, fcntl.LOCK_UN)
                return False
        if self._postgres:
            with self.engine.connect() as connection:
                return bool(connection.execute(_HELD_IN_POSTGRES, _KEY_HALVES).scalar_one())
        return False

    def holder(self) -> str:
        """Who holds the lock, as far as this process can tell."""
        if self._lock_path is None:
            return "another worker on this database"
        try:
            with open(self._lock_path) as lock_file:
                pid = lock_file.read().strip()
        except OSError:
            pid = ""
        return f"worker process {pid} ({self._lock_path})" if pid else self._lock_path

    def _lock_file(self, path: str) -> bool:
        lock_file = open(path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._file = lock_file
        return True

    def _advisory_lock(self) -> bool:
        connection = self.engine.connect()
        try:
            taken = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), _KEY
            ).scalar_one()
            connection.commit()  # ends the transaction; the session's lock outlives it
        except sa.exc.DBAPIError:
            connection.invalidate()
            raise
        if not taken:
            connection.close()
            return False
        self._connection = connection
        return True

    def _connection_alive(self) -> bool:
        if self._connection is None:
            return False
        try:
            self._connection.execute(sa.text("SELECT 1"))
            self._connection.commit()
            return True
        except sa.exc.DBAPIError:
            logger.warning("lost the worker lock's database connection (and with it the lock)")
            self._connection.invalidate()
            self._connection = None
            return False


_KEY = {"key": WORKER_LOCK_KEY}
# pg_locks shows a bigint advisory key as its high and low 32 bits (classid, objid), objsubid 1.
_KEY_HALVES = {"high": WORKER_LOCK_KEY >> 32, "low": WORKER_LOCK_KEY & 0xFFFFFFFF}
_HELD_IN_POSTGRES = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1)"
)
