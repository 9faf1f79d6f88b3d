"""Whether a worker acts on the database, and whether it is getting anywhere.

The worker lock (``WorkerLock``) says whether a worker holds the database; the heartbeat row
(table ``worker_heartbeat``) says which process it is and when it last finished a pass. A worker
that holds the lock but finished no pass for ``stale_after_s`` is stuck: nothing trains, and no
drifting student is rolled back. ``understudy doctor``, the dashboard, ``understudy tasks`` and
``/metrics`` all read ``worker_status``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from understudy.store import tables as t
from understudy.store.repository import Store
from understudy.store.worker_lock import WorkerLock

HEARTBEAT_ID = 1
# A pass that trains n-gram students inline on many labels can take minutes; background training
# does not hold passes up. So a worker is called stuck after ten minutes, or ten poll intervals.
MIN_STALE_AFTER_S = 600.0
STALE_POLLS = 10


@dataclass(frozen=True)
class Heartbeat:
    """The acting worker's process, when it took the lock, and when it last finished a pass."""

    pid: int
    host: str
    started_at: datetime
    last_pass_at: datetime | None

    @property
    def progress_at(self) -> datetime:
        """When the worker last showed progress: its last pass, else taking the lock."""
        return self.last_pass_at or self.started_at


def record_takeover(store: Store, pid: int, host: str) -> None:
    """The worker ``pid`` on ``host`` took the worker lock now (replaces the previous row)."""
    with store.engine.begin() as conn:
        conn.execute(t.worker_heartbeat.delete())
        conn.execute(
            t.worker_heartbeat.insert().values(
                id=HEARTBEAT_ID, pid=pid, host=host, started_at=t.utcnow(), last_pass_at=None
            )
        )


def record_pass(store: Store) -> None:
    """The acting worker finished a pass now (nothing is written before a takeover)."""
    with store.engine.begin() as conn:
        conn.execute(t.worker_heartbeat.update().values(last_pass_at=t.utcnow()))


def read_heartbeat(store: Store) -> Heartbeat | None:
    """The last acting worker's heartbeat, None if no worker ever took the lock."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(t.worker_heartbeat)).first()
    if row is None:
        return None
    return Heartbeat(row.pid, row.host, row.started_at, row.last_pass_at)


@dataclass(frozen=True)
class WorkerStatus:
    """Whether a worker holds the database's lock, its heartbeat, and when it counts as stuck."""

    running: bool
    holder: str
    heartbeat: Heartbeat | None
    stale_after_s: float

    def stuck_for_s(self, now: datetime) -> float | None:
        """Seconds since the running worker last showed progress, when that is longer than
        ``stale_after_s``; None when it is not stuck (or not running)."""
        if not self.running or self.heartbeat is None:
            return None
        idle = (now - self.heartbeat.progress_at).total_seconds()
        return idle if idle > self.stale_after_s else None

    def problem(self, now: datetime) -> str | None:
        """What is wrong with the worker, in a sentence for a person; None when nothing is."""
        if not self.running:
            return (
                "No worker is running against this database: no student trains, no task changes "
                "mode, and a drifting student is not rolled back. Start `understudy serve` (it "
                "starts one unless UNDERSTUDY_START_WORKER=false) or `understudy worker`."
            )
        stuck = self.stuck_for_s(now)
        if stuck is not None:
            return (
                f"The worker ({self.holder}) holds this database's worker lock but has finished "
                f"no pass for {stuck / 60:.0f} min: it is stuck, and nothing trains or rolls back. "
                "Stop its process; `understudy serve` starts another."
            )
        return None


def worker_status(store: Store, poll_s: float) -> WorkerStatus:
    """The database's worker status, for a worker passing every ``poll_s`` seconds; read without
    taking the lock or writing anything."""
    lock = WorkerLock(store.engine)
    running = lock.taken_elsewhere()
    heartbeat = read_heartbeat(store)
    if heartbeat is not None:
        holder = f"worker process {heartbeat.pid} on {heartbeat.host}"
    else:
        holder = lock.holder()
    return WorkerStatus(running, holder, heartbeat, max(MIN_STALE_AFTER_S, STALE_POLLS * poll_s))
