"""The dashboard's store queries, on a seeded traffic history."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import timedelta

from dashboard_support import END, N_CALLS

from understudy.dashboard.sample import SeededCall, sentiment_spec
from understudy.savings import task_savings
from understudy.store import Store
from understudy.store import queries as q
from understudy.tasks import Head, TaskSpec


def test_overview_counts_what_was_seeded(store: Store, seeded: list[SeededCall]) -> None:
    overview = q.task_overview(store, "sentiment", min_labels=100, now=END)
    by_student = sum(c.answered_by == "student" for c in seeded)
    compared = [c for c in seeded if c.teacher_label is not None]
    agreed = sum(c.student_label == c.teacher_label for c in compared)
    assert overview.calls == N_CALLS
    assert overview.student_share == by_student / N_CALLS
    assert overview.compared == len(compared)
    assert overview.agreement == agreed / len(compared)
    assert overview.agreement_low is not None and overview.agreement_high is not None
    assert overview.agreement_low < overview.agreement < overview.agreement_high
    assert overview.labelled == len(compared)
    assert overview.serving_version == "v1" and overview.threshold == 0.8
    assert overview.latency["student"].n == by_student
    student_p50 = overview.latency["student"].p50_ms
    teacher_p50 = overview.latency["teacher"].p50_ms
    assert student_p50 is not None and teacher_p50 is not None and student_p50 < teacher_p50
    # The saving is the store's own (understudy.savings) over the same calls, priced.
    prices = {"teacher-model": [1.0, 4.0]}
    priced = q.task_overview(store, "sentiment", prices=prices, now=END).savings
    assert priced == task_savings(store, "sentiment", prices)
    assert priced.avoided_tokens > 0 and priced.avoided_cost_usd is not None
    assert overview.savings.avoided_cost_usd is None  # no price for the teacher model
    assert overview.blockers == ()
    # A week later the traffic has aged out of the rate window.
    later = q.task_overview(store, "sentiment", now=END + timedelta(days=30))
    assert later.calls_per_day == 0 and later.student_share is None


def test_blockers_name_free_text_and_missing_data(store: Store) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "why": {"type": "string"}},
        "required": ["ok", "why"],
    }
    spec = TaskSpec("explain", schema, (Head("ok", ("false", "true")),), ("why",), ("why",))
    store.register_task(spec)
    store.register_task(sentiment_spec("fresh"))
    overviews = {o.key: o for o in q.tasks_overview(store, min_labels=50)}
    assert overviews["explain"].blockers == (
        "free-text fields: why",
        "too little data: 0/50 labels",
    )
    assert overviews["fresh"].blockers == ("too little data: 0/50 labels",)


def test_timeseries_buckets_every_call_once(store: Store, seeded: list[SeededCall]) -> None:
    series = q.timeseries(store, "sentiment", bucket_s=3600, buckets=49)
    assert len(series) == 49
    assert series[-1].start == END  # the newest call opens the last bucket
    assert sum(b.calls for b in series) == N_CALLS
    assert sum(b.student_calls for b in series) == sum(c.answered_by == "student" for c in seeded)
    assert all(b.start < c.start for b, c in itertools.pairwise(series))
    early = series[0]
    assert early.coverage == 0.0 and early.latency_ms["student"] is None
    assert q.timeseries(store, "sentiment", bucket_s=86400, buckets=1)[0].calls < N_CALLS


def test_review_queue_puts_disagreements_first_with_a_random_slice(
    store: Store, seeded: list[SeededCall]
) -> None:
    items = q.review_queue(store, "sentiment", limit=12, seed=5)
    assert len(items) == 12 and len({i.call_id for i in items}) == 12
    assert items[0].reason is q.ReviewReason.DISAGREEMENT
    assert items[0].teacher_labels != items[0].student_labels
    assert [i.reason for i in items[3::4]] == [q.ReviewReason.RANDOM] * 3
    reasons = {i.reason for i in items}
    assert {q.ReviewReason.LOW_CONFIDENCE, q.ReviewReason.RARE_LABEL} <= reasons
    confidences = [i.confidence for i in items if i.reason is q.ReviewReason.LOW_CONFIDENCE]
    assert confidences == sorted(confidences)
    # The rare-label slice brings the task's rarest label.
    rare = [i for i in items if i.reason is q.ReviewReason.RARE_LABEL]
    assert {i.teacher_labels.get("sentiment") for i in rare} == {"neutral"}
    # A reviewed call leaves the queue; skipped ones can be excluded.
    store.add_labels(items[0].call_id, {"sentiment": "neutral"})
    again = q.review_queue(store, "sentiment", limit=12, seed=5, exclude=[items[1].call_id])
    assert {items[0].call_id, items[1].call_id}.isdisjoint(i.call_id for i in again)


def test_review_queue_filters(store: Store, seeded: list[SeededCall]) -> None:
    neutral = q.review_queue(store, "sentiment", label=("sentiment", "neutral"), seed=1)
    assert neutral and all(i.teacher_labels == {"sentiment": "neutral"} for i in neutral)
    disagreements = q.review_queue(store, "sentiment", disagreement_only=True, limit=50, seed=1)
    expected = sum(
        c.teacher_label is not None and c.teacher_label != c.student_label for c in seeded
    )
    assert len(disagreements) == min(50, expected) == q.review_depth(store, "sentiment")
    assert all(i.teacher_labels != i.student_labels for i in disagreements)


def test_confusion_against_human_labels(store: Store, seeded: list[SeededCall]) -> None:
    teacher_answered = [c for c in seeded if c.answered_by == "teacher"][:3]
    for call in teacher_answered:
        store.add_labels(call.id, {"sentiment": "neutral"})
    matrices = {(m.head, m.side): m for m in q.confusion(store, "sentiment")}
    teacher = matrices[("sentiment", "teacher")]
    assert teacher.total == 3
    expected: dict[str, int] = {}
    for call in teacher_answered:
        assert call.teacher_label is not None
        expected[call.teacher_label] = expected.get(call.teacher_label, 0) + 1
    assert teacher.counts == {"neutral": expected}
    student = matrices[("sentiment", "student")]
    assert student.total == 3  # shadow predictions count as the student's answers


def test_undo_removes_only_the_newest_human_labels(store: Store, seeded: list[SeededCall]) -> None:
    call = next(c for c in seeded if c.answered_by == "teacher")
    store.add_labels(call.id, {"sentiment": "neutral"})
    assert q.undo_human_labels(store, call.id) == {"sentiment": "neutral"}
    assert q.undo_human_labels(store, call.id) == {}
    example = next(e for e in store.examples("sentiment") if e.call_id == call.id)
    assert example.labels == {"sentiment": call.teacher_label}


def test_search_calls_filters(store: Store, seeded: list[SeededCall]) -> None:
    students = q.search_calls(store, answered_by="student", limit=1000)
    assert len(students) == sum(c.answered_by == "student" for c in seeded)
    newest_first = [c.created_at for c in students]
    assert newest_first == sorted(newest_first, reverse=True)
    found = q.search_calls(store, text="#17", limit=1000)
    assert {c.id for c in found} == {c.id for c in seeded if "#17" in c.text}
    assert q.search_calls(store, text=seeded[5].id)[0].id == seeded[5].id
    assert q.search_calls(store, failed=True) == []
    page = q.search_calls(store, task_key="sentiment", limit=10)
    older = q.search_calls(store, task_key="sentiment", before=page[-1].created_at, limit=10)
    assert older[0].created_at < page[-1].created_at
    assert q.search_calls(store, task_key="nope") == []


def test_export_jsonl_and_csv_carry_human_overrides(store: Store, seeded: list[SeededCall]) -> None:
    call = next(c for c in seeded if c.answered_by == "teacher")
    store.add_labels(call.id, {"sentiment": "neutral"})
    lines = [json.loads(line) for line in q.export_labelled(store, "sentiment", "jsonl")]
    assert len(lines) == store.count_labelled("sentiment")
    mine = next(line for line in lines if line["call_id"] == call.id)
    assert mine == {
        "text": call.text,
        "labels": {"sentiment": "neutral"},
        "source": "human",
        "call_id": call.id,
    }
    rows = list(csv.reader(io.StringIO("".join(q.export_labelled(store, "sentiment", "csv")))))
    assert rows[0] == ["text", "sentiment", "source", "call_id"]
    assert [call.text, "neutral", "human", call.id] in rows
    assert len(rows) == len(lines) + 1
