"""The hourly rollup of calls: what the dashboard's rates and charts read instead of raw calls.

``call_hours`` holds, per task and closed hour, the hour's calls grouped by answering side, call
kind and teacher model (a ``Slice``): counts, successful calls, compared and agreed calls,
latency sum and count, and the successful calls' tokens. The query layer fills an hour the first
time it reads it once the hour has closed (computed from the calls, then persisted); the open
hour, and the part of a window that does not cover a whole hour, are always read from the calls.

Staying correct when writes land late: the rollup is *invalidated*, not restricted to facts that
never change. Two kinds of late write change an hour that may already be rolled up: an audit sets
``agreed`` on a call minutes after it was logged, and the gateway's write-behind call log commits
calls stamped earlier (seconds, or hours when a journal is replayed after a crash). Database
triggers (migration 0005) delete a task's rows for an hour whenever a call of that hour is
inserted, deleted or has an aggregated column updated, whoever the writer is; the next read
computes the hour again. Human feedback (the ``labels`` table) feeds no rollup column, so it needs
no invalidation.

Filling races with late writes, so a fill runs under the rollup's write lock: on SQLite its first
statement is a write (the delete of the hours it fills), which takes the database's write lock
before anything is read; on PostgreSQL it locks ``call_hours`` against the triggers' deletes
(``SHARE ROW EXCLUSIVE``) first. Either way no write into those hours can commit between reading
the calls and storing their rollup: it either committed before (and is counted) or its trigger
runs after (and deletes the fresh rows).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from understudy.store import tables as t

HOUR_S = 3600
# Closed hours filled per transaction: bounds how long a first read holds the write lock.
FILL_CHUNK_HOURS = 24


@dataclass(frozen=True)
class Slice:
    """Aggregates of a task's calls in some time range answered by one ``side`` ('teacher',
    'student', '' for none), of one ``kind`` and one ``teacher_model`` ('' for none).

    ``ok_calls`` answered HTTP 200; ``compared`` had both sides' labels, ``agreed`` of them
    matched; ``latency_sum_ms`` adds the ``latency_n`` latencies present (milliseconds);
    tokens add the successful calls' usage.
    """

    side: str
    kind: str
    teacher_model: str
    calls: int
    ok_calls: int
    compared: int
    agreed: int
    latency_n: int
    latency_sum_ms: float
    prompt_tokens: int
    completion_tokens: int


def hour_of(moment: datetime) -> int:
    """Whole hours since the Unix epoch (UTC) at ``moment`` (timezone-aware)."""
    return int(moment.timestamp()) // HOUR_S


def start_of(hour: int) -> datetime:
    """The UTC start of an ``hour_of`` number."""
    return datetime.fromtimestamp(hour * HOUR_S, UTC)


_calls = t.calls.c
_OK = _calls.status_code == 200
_RAW = (
    sa.select(
        _calls.answered_by,
        _calls.kind,
        _calls.teacher_model,
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(sa.case((_OK, 1), else_=0)), 0),
        sa.func.count(_calls.agreed),
        sa.func.coalesce(sa.func.sum(sa.case((_calls.agreed.is_(True), 1), else_=0)), 0),
        sa.func.count(_calls.latency_ms),
        sa.func.coalesce(sa.func.sum(_calls.latency_ms), 0.0),
        sa.func.coalesce(sa.func.sum(sa.case((_OK, _calls.prompt_tokens), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((_OK, _calls.completion_tokens), else_=0)), 0),
    )
    .where(
        _calls.task_id == sa.bindparam("task_id"),
        _calls.created_at >= sa.bindparam("start", type_=t.UTCDateTime),
        _calls.created_at < sa.bindparam("end", type_=t.UTCDateTime),
    )
    .group_by(_calls.answered_by, _calls.kind, _calls.teacher_model)
)
# Two statements: SQLite answers a lone min() or max() with one index probe, both together
# with a scan of the task's calls.
_FIRST, _NEWEST = (
    sa.select(bound(_calls.created_at)).where(_calls.task_id == sa.bindparam("task_id"))
    for bound in (sa.func.min, sa.func.max)
)
_hours = t.call_hours.c
_STORED = sa.select(t.call_hours).where(
    _hours.task_id == sa.bindparam("task_id"),
    _hours.hour >= sa.bindparam("first"),
    _hours.hour < sa.bindparam("end"),
)


def _slice_of(row: Sequence[Any]) -> Slice:
    side, kind, model, calls, ok, compared, agreed, n, latency, prompt, completion = row
    return Slice(
        side or "",
        kind,
        model or "",
        int(calls),
        int(ok),
        int(compared),
        int(agreed),
        int(n),
        float(latency),
        int(prompt),
        int(completion),
    )


def raw_slices(conn: Connection, task_id: int, start: datetime, end: datetime) -> list[Slice]:
    """The task's calls created in [start, end), aggregated from the calls themselves."""
    rows = conn.execute(_RAW, {"task_id": task_id, "start": start, "end": end}).all()
    return [_slice_of(tuple(row)) for row in rows]


# An hour with no calls is stored as this one all-zero row, so that "rolled up, empty" differs
# from "not rolled up yet".
_EMPTY = Slice("", "", "", 0, 0, 0, 0, 0, 0.0, 0, 0)


def _fill(conn: Connection, task_id: int, hours: list[int]) -> dict[int, list[Slice]]:
    """Compute closed ``hours`` from the calls and store them (one transaction, see the module
    docstring for the locking)."""
    if conn.in_transaction():
        conn.commit()  # start the fill's own transaction, with no snapshot read before its lock
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("LOCK TABLE call_hours IN SHARE ROW EXCLUSIVE MODE"))
    # Also the write that takes SQLite's lock; it drops what a concurrent fill may have stored.
    conn.execute(t.call_hours.delete().where(_hours.task_id == task_id, _hours.hour.in_(hours)))
    filled: dict[int, list[Slice]] = {}
    for hour in hours:
        filled[hour] = raw_slices(conn, task_id, start_of(hour), start_of(hour + 1)) or [_EMPTY]
    conn.execute(
        t.call_hours.insert(),
        [
            {"task_id": task_id, "hour": hour, **asdict(piece)}
            for hour, pieces in filled.items()
            for piece in pieces
        ],
    )
    conn.commit()
    return filled


def hourly(conn: Connection, task_id: int, first: int, end: int) -> dict[int, list[Slice]]:
    """Slices of each hour in [first, end) that has calls: closed hours from the rollup (filled
    where missing, which commits ``conn``), the open hour by the clock and later ones from the
    calls."""
    oldest = conn.execute(_FIRST, {"task_id": task_id}).scalar_one()
    newest = conn.execute(_NEWEST, {"task_id": task_id}).scalar_one()
    if oldest is None or newest is None:
        return {}
    # Hours before the task's first call or after its newest are empty; a call written there
    # later moves these bounds, so they need no stored rows.
    low, high = max(first, hour_of(oldest)), min(end, hour_of(newest) + 1)
    current = hour_of(t.utcnow())
    closed_end = max(low, min(high, current))
    result: dict[int, list[Slice]] = defaultdict(list)
    for row in conn.execute(_STORED, {"task_id": task_id, "first": low, "end": closed_end}).all():
        result[row.hour].append(_slice_of(tuple(row)[2:]))
    missing = [hour for hour in range(low, closed_end) if hour not in result]
    for offset in range(0, len(missing), FILL_CHUNK_HOURS):
        result.update(_fill(conn, task_id, missing[offset : offset + FILL_CHUNK_HOURS]))
    for hour in range(closed_end, high):
        pieces = raw_slices(conn, task_id, start_of(hour), start_of(hour + 1))
        if pieces:
            result[hour] = pieces
    return dict(result)


def window(conn: Connection, task_id: int, start: datetime, end: datetime) -> list[Slice]:
    """Slices of the task's calls created in [start, end): whole hours through ``hourly``, the
    parts of an hour at either edge from the calls."""
    first = math.ceil(start.timestamp() / HOUR_S)  # the first hour starting at or after start
    last = hour_of(end)  # the hour holding end: whole hours end before it
    if first >= last:
        return raw_slices(conn, task_id, start, end)
    pieces: list[Slice] = []
    if start < start_of(first):
        pieces += raw_slices(conn, task_id, start, start_of(first))
    for hour_pieces in hourly(conn, task_id, first, last).values():
        pieces += hour_pieces
    if start_of(last) < end:
        pieces += raw_slices(conn, task_id, start_of(last), end)
    return pieces
