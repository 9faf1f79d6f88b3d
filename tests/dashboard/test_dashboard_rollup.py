"""The hourly rollup of calls behind the dashboard's rates and charts: read once filled, the
same numbers as the calls, and invalidated by late writes (audits, late-committed calls)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from dashboard_support import END, N_CALLS

from understudy.dashboard.sample import SeededCall, seed_traffic, sentiment_spec
from understudy.errors import InvalidRequest
from understudy.store import CallKind, CallRecord, Store, rollup
from understudy.store import queries as q
from understudy.store import tables as t
from understudy.store.switch import record_audit
from understudy.tasks import Task

HOUR = timedelta(hours=1)


def _stored_hours(store: Store) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(t.call_hours.c.hour).distinct()).scalars())


def _sums(pieces: Iterable[rollup.Slice]) -> dict[str, float]:
    """Every additive field of the slices, by side."""
    sums: dict[str, float] = {}
    for p in pieces:
        for name in ("calls", "ok_calls", "compared", "agreed", "latency_n", "latency_sum_ms"):
            key = f"{p.side}.{name}"
            sums[key] = sums.get(key, 0) + getattr(p, name)
        sums[f"{p.side}.tokens"] = sums.get(f"{p.side}.tokens", 0) + p.prompt_tokens
    return {key: value for key, value in sums.items() if value}


def _bucket_of(store: Store, moment: datetime) -> q.Bucket:
    series = q.timeseries(store, "sentiment", bucket_s=3600, buckets=49)
    return next(b for b in series if b.start <= moment < b.start + HOUR)


def _call(task: Task, created_at: datetime, call_id: str, **fields: object) -> CallRecord:
    return CallRecord(
        id=call_id,
        kind=CallKind.CLASSIFICATION,
        request=None,
        response=None,
        status_code=200,
        task=task,
        user_text="late call",
        input_text="late call",
        created_at=created_at,
        **fields,  # type: ignore[arg-type]
    )


def test_closed_hours_are_stored_once_and_read_back(store: Store, seeded: list[SeededCall]) -> None:
    first = q.timeseries(store, "sentiment", bucket_s=3600, buckets=49)
    assert sum(b.calls for b in first) == N_CALLS
    assert _stored_hours(store) == {rollup.hour_of(b.start) for b in first}
    # Later reads use the stored rows, not the calls: a stored count changed by hand shows.
    hour = rollup.hour_of(first[10].start)
    with store.engine.begin() as conn:
        conn.execute(
            t.call_hours.update()
            .where(t.call_hours.c.hour == hour, t.call_hours.c.side == "teacher")
            .values(calls=t.call_hours.c.calls + 1000)
        )
    again = q.timeseries(store, "sentiment", bucket_s=3600, buckets=49)
    assert again[10].calls == first[10].calls + 1000
    assert [b.calls for b in again[11:]] == [b.calls for b in first[11:]]


def test_rollup_matches_the_calls_at_any_window_edges(
    store: Store, task: Task, seeded: list[SeededCall]
) -> None:
    with store.engine.connect() as conn:
        task_id = conn.execute(sa.select(t.tasks.c.id)).scalar_one()
    begin = END - timedelta(days=2)
    with store.engine.connect() as conn:
        for start, end in [
            (begin - HOUR, END + HOUR),  # everything, with room
            (begin + timedelta(minutes=17), END - timedelta(minutes=41)),  # both edges mid-hour
            (begin + timedelta(hours=5, minutes=1), begin + timedelta(hours=5, minutes=59)),
            (begin + timedelta(hours=7), begin + timedelta(hours=9)),  # whole hours only
            (begin + timedelta(milliseconds=500), END),  # leaves out the first call, at begin
        ]:
            expected = _sums(rollup.raw_slices(conn, task_id, start, end))
            got = _sums(rollup.window(conn, task_id, start, end))
            assert got == pytest.approx(expected), (start, end)
            assert expected  # every window above holds calls


def test_a_late_audit_drops_its_hour_and_counts(store: Store, seeded: list[SeededCall]) -> None:
    unaudited = next(c for c in seeded if c.answered_by == "student" and c.teacher_label is None)
    when = store.get_call(unaudited.id).created_at
    before = _bucket_of(store, when)
    assert rollup.hour_of(when) in _stored_hours(store)
    assert unaudited.student_label is not None
    agreed = record_audit(
        store, unaudited.id, {"sentiment": unaudited.student_label}, teacher_model="teacher-model"
    )
    assert agreed and rollup.hour_of(when) not in _stored_hours(store)
    after = _bucket_of(store, when)
    assert (after.compared, after.agreed) == (before.compared + 1, before.agreed + 1)
    assert rollup.hour_of(when) in _stored_hours(store)  # filled again on that read


def test_a_late_call_lands_in_its_closed_hour(
    store: Store, task: Task, seeded: list[SeededCall]
) -> None:
    series = q.timeseries(store, "sentiment", bucket_s=3600, buckets=49)
    busy = series[20].start + timedelta(minutes=30)
    store.record_call(_call(task, busy, "us-late-1", answered_by="teacher", latency_ms=900.0))
    assert _bucket_of(store, busy).calls == series[20].calls + 1
    # Before the first call: the chart's range reaches back there, nothing was stored for it.
    early = series[0].start - timedelta(minutes=30)
    store.record_call(_call(task, early, "us-late-2", answered_by="student", latency_ms=3.0))
    longer = q.timeseries(store, "sentiment", bucket_s=3600, buckets=50)
    assert (longer[0].calls, longer[0].student_calls) == (1, 1)
    assert sum(b.calls for b in longer) == N_CALLS + 2


def test_human_feedback_keeps_the_stored_hours(store: Store, seeded: list[SeededCall]) -> None:
    q.timeseries(store, "sentiment", bucket_s=3600, buckets=49)
    stored = _stored_hours(store)
    store.add_labels(seeded[5].id, {"sentiment": "neutral"})
    assert _stored_hours(store) == stored


def test_the_open_hour_is_read_from_the_calls(store: Store) -> None:
    task = store.register_task(sentiment_spec())
    now = t.utcnow()
    seed_traffic(store, task, 60, seed=1, end=now, span=timedelta(hours=3))
    series = q.timeseries(store, "sentiment", bucket_s=3600, buckets=4)
    assert sum(b.calls for b in series) == 60
    assert rollup.hour_of(now) not in _stored_hours(store)
    assert _stored_hours(store)  # the closed hours before it were stored
    store.record_call(_call(task, t.utcnow(), "us-now", answered_by="teacher"))
    assert q.timeseries(store, "sentiment", bucket_s=3600, buckets=4)[-1].calls == (
        series[-1].calls + 1
    )


def test_buckets_must_be_whole_hours(store: Store, seeded: list[SeededCall]) -> None:
    with pytest.raises(InvalidRequest):
        q.timeseries(store, "sentiment", bucket_s=1800, buckets=4)
