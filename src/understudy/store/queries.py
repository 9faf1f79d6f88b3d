"""Read-side queries of the dashboard, the review queue, the metrics collector and the CLI.

Functions over a ``Store`` (one short transaction each), written with SQLAlchemy Core and served
by the indexes of migration 0003 so that every page stays fast with 100k logged calls; rates and
charts over time read the hourly rollup (``understudy.store.rollup``, which may commit the hours
it fills) instead of scanning calls. Each function looks at a task's newest version unless told
otherwise: that is the version being served and labelled.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from understudy.errors import InvalidRequest, UnknownTask
from understudy.routing.modes import Mode
from understudy.savings import Savings, TeacherUsage, savings_of
from understudy.stats import wilson_interval
from understudy.store import rollup
from understudy.store import tables as t
from understudy.store.records import CallKind

# The store's own row-to-Task conversion, shared so both read the tasks table one way.
from understudy.store.repository import NEWEST_TASK_VERSIONS, Store, _task_of
from understudy.tasks import LabelSource, Task

TEACHER = "teacher"
STUDENT = "student"
SIDES = (TEACHER, STUDENT)
# Days of traffic behind a task's rates (calls/day, student share, agreement).
OVERVIEW_DAYS = 7
# Newest calls per side whose latencies give the p50/p99 (bounded so the page cost is too).
LATENCY_SAMPLE = 1000

_Row = sa.Row[*tuple[Any, ...]]
# Teacher prices: USD per million [input, output] tokens by model name prefix.
Prices = Mapping[str, Sequence[float]]


def _latest_task(conn: Connection, task_key: str) -> _Row:
    row = conn.execute(
        sa.select(t.tasks)
        .where(t.tasks.c.key == task_key)
        .order_by(t.tasks.c.version.desc())
        .limit(1)
    ).first()
    if row is None:
        raise UnknownTask(f"no task {task_key!r} is registered", param="task")
    return row


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by nearest rank; None for no values."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank]


# --- tasks page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SideLatency:
    """Latency of one side over its newest ``n`` calls, in milliseconds."""

    n: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class WorkerBlock:
    """A reason the worker recorded (a ``blocked`` event) for not training or switching the
    task, and when it recorded it last."""

    reason: str
    since: datetime


@dataclass(frozen=True)
class TaskOverview:
    """A task's newest version at a glance, over the last ``OVERVIEW_DAYS`` days of traffic.

    ``calls`` counts that window's calls (an all-time count would cost a scan of every call).
    ``student_share`` is the fraction of calls the student answered; ``agreement`` the fraction of
    compared calls (both sides' labels known) where they agreed, with its 95% Wilson interval
    ``agreement_low``..``agreement_high``. ``savings`` is what the student avoided in that window
    (``understudy.savings``: unaudited student chat calls at the mean tokens and price of the
    window's successful teacher calls; no cost without prices for the teacher model).
    ``blockers`` say why the task cannot switch to a student (empty when nothing stands in the
    way); ``worker_blocks`` are the reasons the worker gave since it last started a training run
    of this version.
    """

    key: str
    version: int
    mode: Mode
    threshold: float | None
    serving_version: str | None
    calls: int
    calls_per_day: float
    student_share: float | None
    compared: int
    agreement: float | None
    agreement_low: float | None
    agreement_high: float | None
    latency: dict[str, SideLatency]
    savings: Savings
    labelled: int
    human_labelled: int
    free_text_fields: tuple[str, ...]
    blockers: tuple[str, ...] = field(default=())
    worker_blocks: tuple[WorkerBlock, ...] = field(default=())


# Far-future bound for windows open towards the future (calls stamped after ``now`` count too).
_END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
# Distinct reasons of a task's recent ``blocked`` events shown at most, and how many of its newest
# ``blocked`` events are read to find them.
WORKER_BLOCKS_SHOWN = 5
WORKER_BLOCKS_READ = 100


def _savings(task_key: str, pieces: Sequence[rollup.Slice], prices: Prices) -> Savings:
    """``understudy.savings`` over rollup slices: the same rules as ``task_savings``."""
    usage: dict[str, tuple[int, int, int]] = {}
    for p in pieces:
        if p.side == TEACHER and p.ok_calls:
            calls, prompt, completion = usage.get(p.teacher_model, (0, 0, 0))
            usage[p.teacher_model] = (
                calls + p.ok_calls,
                prompt + p.prompt_tokens,
                completion + p.completion_tokens,
            )
    teacher = [TeacherUsage(model or None, *sums) for model, sums in usage.items()]
    # Native /v1/classify calls never had a teacher call to replace.
    chat = [p for p in pieces if p.side == STUDENT and p.kind == CallKind.CLASSIFICATION.value]
    return savings_of(
        task_key,
        teacher,
        sum(p.calls for p in chat),
        sum(p.compared for p in chat),
        prices,
    )


def _worker_blocks(conn: Connection, task_id: int) -> tuple[WorkerBlock, ...]:
    """Distinct reasons of the task version's ``blocked`` events newer than its newest training
    run (a run that started shows the worker got past them), newest first."""
    events = t.events.c
    last_run = conn.execute(
        sa.select(t.student_runs.c.started_at)
        .where(t.student_runs.c.task_id == task_id)
        .order_by(t.student_runs.c.started_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    query = (
        sa.select(events.reason, events.created_at)
        .where(events.task_id == task_id, events.kind == "blocked")
        .order_by(events.id.desc())
        .limit(WORKER_BLOCKS_READ)
    )
    blocks: dict[str, WorkerBlock] = {}
    for reason, created_at in conn.execute(query).all():
        if last_run is not None and created_at <= last_run:
            continue
        text = reason or "blocked (no reason recorded)"
        blocks.setdefault(text, WorkerBlock(text, created_at))
    return tuple(blocks.values())[:WORKER_BLOCKS_SHOWN]


def _overview(
    conn: Connection, row: _Row, now: datetime, min_labels: int, prices: Prices
) -> TaskOverview:
    calls = t.calls.c
    labels = t.labels.c
    recent = rollup.window(conn, row.id, now - timedelta(days=OVERVIEW_DAYS), _END_OF_TIME)
    latency = {}
    for side in SIDES:
        present = sorted(
            conn.execute(
                sa.select(calls.latency_ms)
                .where(
                    calls.task_id == row.id,
                    calls.answered_by == side,
                    calls.latency_ms.is_not(None),
                )
                .order_by(calls.created_at.desc())
                .limit(LATENCY_SAMPLE)
            ).scalars()
        )
        latency[side] = SideLatency(
            len(present), _percentile(present, 0.5), _percentile(present, 0.99)
        )
    # Two queries, not one with two DISTINCT aggregates: alone, each streams over the ordered
    # (task_id, call_id, source) index; together they need two temporary B-trees (slower).
    labelled = conn.execute(
        sa.select(sa.func.count(sa.distinct(labels.call_id))).where(labels.task_id == row.id)
    ).scalar_one()
    human = conn.execute(
        sa.select(sa.func.count(sa.distinct(labels.call_id))).where(
            labels.task_id == row.id, labels.source == LabelSource.HUMAN.value
        )
    ).scalar_one()
    total = sum(p.calls for p in recent)
    student_calls = sum(p.calls for p in recent if p.side == STUDENT)
    compared = sum(p.compared for p in recent)
    agreed = sum(p.agreed for p in recent)
    low, high = wilson_interval(agreed, compared) if compared else (None, None)
    return TaskOverview(
        key=row.key,
        version=row.version,
        mode=Mode(row.mode),
        threshold=row.threshold,
        serving_version=row.serving_version,
        calls=total,
        calls_per_day=total / OVERVIEW_DAYS,
        student_share=student_calls / total if total else None,
        compared=compared,
        agreement=agreed / compared if compared else None,
        agreement_low=low,
        agreement_high=high,
        latency=latency,
        savings=_savings(row.key, recent, prices),
        labelled=int(labelled),
        human_labelled=int(human),
        free_text_fields=tuple(row.free_text_fields),
        blockers=_blockers(row, int(labelled), min_labels),
        worker_blocks=_worker_blocks(conn, row.id),
    )


def _blockers(row: _Row, labelled: int, min_labels: int) -> tuple[str, ...]:
    found = []
    if row.required_free_text:
        found.append("free-text fields: " + ", ".join(row.required_free_text))
    if labelled < min_labels:
        found.append(f"too little data: {labelled}/{min_labels} labels")
    if row.serving_version is None and labelled >= min_labels:
        found.append("no student trained yet")
    if row.mode == Mode.TEACHER.value:
        found.append("turned off (teacher mode)")
    return tuple(found)


def task_overview(
    store: Store,
    task_key: str,
    *,
    min_labels: int = 200,
    prices: Prices | None = None,
    now: datetime | None = None,
) -> TaskOverview:
    """One task's overview (newest version); raises ``UnknownTask``. ``min_labels`` is the
    labelled-call count below which the task is flagged as having too little data; ``prices``
    (USD per million input/output tokens by model prefix, ``Settings.model_prices``) price the
    avoided teacher calls."""
    with store.engine.connect() as conn:
        row = _latest_task(conn, task_key)
        return _overview(conn, row, now or t.utcnow(), min_labels, prices or {})


def tasks_overview(
    store: Store,
    *,
    min_labels: int = 200,
    prices: Prices | None = None,
    now: datetime | None = None,
) -> list[TaskOverview]:
    """Every task's overview (newest version of each key), by key."""
    with store.engine.connect() as conn:
        rows = conn.execute(NEWEST_TASK_VERSIONS).all()
        moment = now or t.utcnow()
        return [_overview(conn, row, moment, min_labels, prices or {}) for row in rows]


# --- charts over time --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """Traffic of one time bucket starting at ``start`` (UTC): call counts, the student's share,
    agreement on compared calls, and mean latency per side in milliseconds."""

    start: datetime
    calls: int
    student_calls: int
    compared: int
    agreed: int
    latency_ms: dict[str, float | None]

    @property
    def coverage(self) -> float | None:
        """Fraction of the bucket's calls the student answered."""
        return self.student_calls / self.calls if self.calls else None

    @property
    def agreement(self) -> float | None:
        """Fraction of compared calls where student and teacher agreed."""
        return self.agreed / self.compared if self.compared else None


def _bucket(start: datetime, pieces: Sequence[rollup.Slice]) -> Bucket:
    def mean_latency(side: str) -> float | None:
        n = sum(p.latency_n for p in pieces if p.side == side)
        return sum(p.latency_sum_ms for p in pieces if p.side == side) / n if n else None

    return Bucket(
        start=start,
        calls=sum(p.calls for p in pieces),
        student_calls=sum(p.calls for p in pieces if p.side == STUDENT),
        compared=sum(p.compared for p in pieces),
        agreed=sum(p.agreed for p in pieces),
        latency_ms={side: mean_latency(side) for side in SIDES},
    )


def timeseries(
    store: Store, task_key: str, *, bucket_s: int = 3600, buckets: int = 48
) -> list[Bucket]:
    """The task's last ``buckets`` buckets of ``bucket_s`` seconds (a whole number of hours),
    oldest first, ending with the bucket of its newest call (empty buckets included, so charts
    show gaps as zeros). Read from the hourly rollup (``understudy.store.rollup``)."""
    if bucket_s <= 0 or buckets <= 0 or bucket_s % rollup.HOUR_S:
        raise InvalidRequest("bucket_s must be a positive number of hours and buckets positive")
    per_bucket = bucket_s // rollup.HOUR_S
    with store.engine.connect() as conn:
        task_id = _latest_task(conn, task_key).id
        newest = conn.execute(
            sa.select(t.calls.c.created_at)
            .where(t.calls.c.task_id == task_id)
            .order_by(t.calls.c.created_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        if newest is None:
            return []
        last = int(newest.timestamp()) // bucket_s
        first_hour = (last - buckets + 1) * per_bucket
        hours = rollup.hourly(conn, task_id, first_hour, (last + 1) * per_bucket)
    series = []
    for index in range(last - buckets + 1, last + 1):
        pieces = [
            piece
            for hour in range(index * per_bucket, (index + 1) * per_bucket)
            for piece in hours.get(hour, ())
        ]
        series.append(_bucket(datetime.fromtimestamp(index * bucket_s, UTC), pieces))
    return series


# --- the serving student's held-out evaluation -------------------------------------------------


def serving_metrics(store: Store, task_key: str) -> dict[str, Any] | None:
    """The metrics recorded with the run that produced the task's serving student (the
    ``EvaluationReport.to_json()`` the worker stored, with its ``curve`` and ``threshold``), or
    None when no student serves or its run recorded none."""
    with store.engine.connect() as conn:
        row = _latest_task(conn, task_key)
        if row.serving_version is None:
            return None
        metrics = conn.execute(
            sa.select(t.student_runs.c.metrics)
            .where(
                t.student_runs.c.task_id == row.id,
                t.student_runs.c.version == row.serving_version,
            )
            .order_by(t.student_runs.c.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    return dict(metrics) if metrics else None


# --- confusion against gold --------------------------------------------------------------------


@dataclass(frozen=True)
class Confusion:
    """Counts of (gold label, predicted label) for one head and one side (teacher or student):
    ``counts[gold][predicted]``, over calls a human labelled and that side answered or predicted."""

    head: str
    side: str
    labels: tuple[str, ...]
    counts: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        """Number of compared calls."""
        return sum(sum(row.values()) for row in self.counts.values())

    @property
    def accuracy(self) -> float | None:
        """Fraction on the diagonal (None with no calls)."""
        total = self.total
        return sum(self.counts[g].get(g, 0) for g in self.counts) / total if total else None


def confusion(store: Store, task_key: str) -> list[Confusion]:
    """Confusion matrices of the teacher's and the student's labels against human (gold) labels,
    per head of the task's newest version. The newest human label per head is the gold one; the
    student's label is the one it predicted (shadow or audit) or answered with."""
    with store.engine.connect() as conn:
        row = _latest_task(conn, task_key)
        labels = t.labels.c
        gold_rows = conn.execute(
            sa.select(labels.call_id, labels.head, labels.value)
            .where(labels.task_id == row.id, labels.source == LabelSource.HUMAN.value)
            .order_by(labels.id)
        ).all()
        gold: dict[str, dict[str, str]] = {}
        for call_id, head, value in gold_rows:
            gold.setdefault(call_id, {})[head] = value
        teacher: dict[str, dict[str, str]] = {}
        student: dict[str, dict[str, str]] = {}
        ids = list(gold)
        # Chunked IN lists keep each statement under the database's bound-parameter limit.
        for offset in range(0, len(ids), 500):
            chunk = ids[offset : offset + 500]
            for call_id, head, value in conn.execute(
                sa.select(labels.call_id, labels.head, labels.value)
                .where(labels.call_id.in_(chunk), labels.source == LabelSource.TEACHER.value)
                .order_by(labels.id)
            ).all():
                teacher.setdefault(call_id, {})[head] = value
            for call_id, answered_by, answer, predicted in conn.execute(
                sa.select(
                    t.calls.c.id, t.calls.c.answered_by, t.calls.c.labels, t.calls.c.student_labels
                ).where(t.calls.c.id.in_(chunk))
            ).all():
                chosen = answer if answered_by == STUDENT else predicted
                if chosen:
                    student[call_id] = chosen
    task = _task_of(row)
    matrices = []
    for head in task.heads:
        for side, answers in ((TEACHER, teacher), (STUDENT, student)):
            counts: dict[str, dict[str, int]] = {}
            for call_id, gold_labels in gold.items():
                truth = gold_labels.get(head.name)
                guess = answers.get(call_id, {}).get(head.name)
                if truth is None or guess is None:
                    continue
                row_counts = counts.setdefault(truth, {})
                row_counts[guess] = row_counts.get(guess, 0) + 1
            matrices.append(Confusion(head.name, side, head.labels, counts))
    return matrices


# --- the review queue --------------------------------------------------------------------------


class ReviewReason(StrEnum):
    """Why a call is in the review queue."""

    DISAGREEMENT = "disagreement"  # student and teacher gave different labels
    LOW_CONFIDENCE = "low confidence"  # the student was unsure
    RARE_LABEL = "rare label"  # its label is under-represented in the task's labelled data
    RANDOM = "random"  # an unbiased sample, for honest accuracy estimates


@dataclass(frozen=True)
class ReviewItem:
    """One call to review: its input text, both sides' answers, and why it was picked."""

    call_id: str
    text: str
    teacher_labels: dict[str, str]
    student_labels: dict[str, str]
    confidence: float | None
    answered_by: str | None
    reason: ReviewReason
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The item as a JSON-ready dict (what the review page's script reads)."""
        return {
            "call_id": self.call_id,
            "text": self.text,
            "teacher_labels": self.teacher_labels,
            "student_labels": self.student_labels,
            "confidence": self.confidence,
            "answered_by": self.answered_by,
            "reason": self.reason.value,
            "created_at": self.created_at.isoformat(),
        }


def _human_labelled(call_id: ColumnElement[Any]) -> ColumnElement[bool]:
    return sa.exists(
        sa.select(1).where(
            t.labels.c.call_id == call_id, t.labels.c.source == LabelSource.HUMAN.value
        )
    )


def _candidates(
    task_id: int,
    label: tuple[str, str] | None,
    disagreement_only: bool,
    exclude: Collection[str],
) -> list[ColumnElement[bool]]:
    """WHERE clauses shared by every slice: the task's classification calls not yet reviewed."""
    calls = t.calls.c
    where = [
        calls.task_id == task_id,
        calls.kind == CallKind.CLASSIFICATION.value,
        ~_human_labelled(calls.id),
    ]
    if label is not None:
        head, value = label
        where.append(
            sa.exists(
                sa.select(1).where(
                    t.labels.c.call_id == calls.id,
                    t.labels.c.head == head,
                    t.labels.c.value == value,
                    t.labels.c.source != LabelSource.HUMAN.value,
                )
            )
        )
    if disagreement_only:
        where.append(calls.agreed.is_(False))
    if exclude:
        where.append(calls.id.not_in(list(exclude)))
    return where


def _label_frequencies(conn: Connection, task: Task, task_id: int) -> list[tuple[str, str, int]]:
    """(head, label, labelled calls) for every label of every head, rarest first."""
    labels = t.labels.c
    seen = Counter(
        {
            (head, value): n
            for head, value, n in conn.execute(
                sa.select(labels.head, labels.value, sa.func.count())
                .where(labels.task_id == task_id)
                .group_by(labels.head, labels.value)
            ).all()
        }
    )
    every = [(h.name, label, seen[(h.name, label)]) for h in task.heads for label in h.labels]
    return sorted(every, key=lambda item: (item[2], item[0], item[1]))


def review_queue(
    store: Store,
    task_key: str,
    *,
    limit: int = 20,
    label: tuple[str, str] | None = None,
    disagreement_only: bool = False,
    exclude: Collection[str] = (),
    random_every: int = 4,
    seed: int | None = None,
) -> list[ReviewItem]:
    """The next ``limit`` calls of a task to review, ordered for the most learning per label.

    Priority slices are interleaved: student–teacher disagreements (newest first), the student's
    least confident predictions, then calls whose label is rarest in the task's labelled data;
    every ``random_every``-th item is a uniformly random unreviewed call instead, so reviewed data
    also gives an unbiased accuracy estimate (0 turns the random slice off). Calls a human has
    labelled, and ``exclude``d ids (e.g. skipped ones), never appear. ``label`` (head, value)
    keeps calls whose teacher/import label is that one; ``disagreement_only`` keeps
    disagreements. ``seed`` fixes the random slice (None: a fresh one per call).
    """
    if limit <= 0:
        return []
    calls = t.calls.c
    columns = (
        calls.id,
        calls.input_text,
        calls.user_text,
        calls.labels,
        calls.student_labels,
        calls.confidence,
        calls.answered_by,
        calls.created_at,
    )
    with store.engine.connect() as conn:
        row = _latest_task(conn, task_key)
        task = _task_of(row)
        where = _candidates(row.id, label, disagreement_only, exclude)
        slices: list[tuple[ReviewReason, list[_Row]]] = [
            (
                ReviewReason.DISAGREEMENT,
                list(
                    conn.execute(
                        sa.select(*columns)
                        .where(*where, calls.agreed.is_(False))
                        .order_by(calls.created_at.desc())
                        .limit(limit)
                    ).all()
                ),
            ),
            (
                ReviewReason.LOW_CONFIDENCE,
                list(
                    conn.execute(
                        sa.select(*columns)
                        .where(*where, calls.confidence.is_not(None))
                        .order_by(calls.confidence, calls.created_at.desc())
                        .limit(limit)
                    ).all()
                ),
            ),
        ]
        rare: list[_Row] = []
        for head, value, _ in _label_frequencies(conn, task, row.id):
            if len(rare) >= limit:
                break
            if label is not None and (head, value) != label:
                continue
            rare += list(
                conn.execute(
                    sa.select(*columns)
                    .where(
                        *where,
                        sa.exists(
                            sa.select(1).where(
                                t.labels.c.call_id == calls.id,
                                t.labels.c.head == head,
                                t.labels.c.value == value,
                            )
                        ),
                    )
                    .order_by(calls.created_at.desc())
                    .limit(limit - len(rare))
                ).all()
            )
        slices.append((ReviewReason.RARE_LABEL, rare))
        randoms = _random_slice(conn, where, columns, limit, seed) if random_every > 0 else []
        picked = _interleave(slices, randoms, limit, random_every)
        teacher = _teacher_labels(conn, [item.id for item, _ in picked])
    return [
        ReviewItem(
            call_id=item.id,
            text=item.input_text or item.user_text or "",
            teacher_labels=teacher.get(item.id, {}),
            student_labels=(item.labels if item.answered_by == STUDENT else item.student_labels)
            or {},
            confidence=item.confidence,
            answered_by=item.answered_by,
            reason=reason,
            created_at=item.created_at,
        )
        for item, reason in picked
    ]


def _random_slice(
    conn: Connection,
    where: list[ColumnElement[bool]],
    columns: tuple[ColumnElement[Any], ...],
    limit: int,
    seed: int | None,
) -> list[_Row]:
    """Up to ``limit`` calls starting at a random point of the id order (request ids are random
    hex, so this is a uniform sample that walks the primary key instead of sorting by random())."""
    pivot = "us-" + f"{random.Random(seed).getrandbits(128):032x}"
    calls = t.calls.c
    found = list(
        conn.execute(
            sa.select(*columns).where(*where, calls.id >= pivot).order_by(calls.id).limit(limit)
        ).all()
    )
    if len(found) < limit:  # wrap around to the start of the id order
        found += conn.execute(
            sa.select(*columns)
            .where(*where, calls.id < pivot)
            .order_by(calls.id)
            .limit(limit - len(found))
        ).all()
    return found


def _interleave(
    slices: list[tuple[ReviewReason, list[_Row]]],
    randoms: list[_Row],
    limit: int,
    random_every: int,
) -> list[tuple[_Row, ReviewReason]]:
    """Round-robin over the priority slices, a random call every ``random_every``-th place,
    each call once."""
    queues = [(reason, list(rows)) for reason, rows in slices]
    spare = list(randoms)
    picked: list[tuple[_Row, ReviewReason]] = []
    seen: set[str] = set()

    def take(rows: list[_Row], reason: ReviewReason) -> bool:
        while rows:
            candidate = rows.pop(0)
            if candidate.id not in seen:
                seen.add(candidate.id)
                picked.append((candidate, reason))
                return True
        return False

    turn = 0
    while len(picked) < limit and (spare or any(rows for _, rows in queues)):
        if random_every > 0 and (len(picked) + 1) % random_every == 0 and take(spare, _RANDOM):
            continue
        for step in range(len(queues)):
            reason, rows = queues[(turn + step) % len(queues)]
            if take(rows, reason):
                turn = (turn + step + 1) % len(queues)
                break
        else:  # the priority slices ran dry: fill up with random calls
            if not take(spare, _RANDOM):
                break
    return picked


_RANDOM = ReviewReason.RANDOM


def _teacher_labels(conn: Connection, call_ids: list[str]) -> dict[str, dict[str, str]]:
    """The teacher's (or an import's) labels per call, newest per head."""
    found: dict[str, dict[str, str]] = {}
    if not call_ids:
        return found
    for call_id, head, value in conn.execute(
        sa.select(t.labels.c.call_id, t.labels.c.head, t.labels.c.value)
        .where(
            t.labels.c.call_id.in_(call_ids),
            t.labels.c.source != LabelSource.HUMAN.value,
        )
        .order_by(t.labels.c.id)
    ).all():
        found.setdefault(call_id, {})[head] = value
    return found


def review_depth(store: Store, task_key: str) -> int:
    """Disagreements of the task's newest version that no human has reviewed yet."""
    calls = t.calls.c
    with store.engine.connect() as conn:
        task_id = _latest_task(conn, task_key).id
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(t.calls)
                .where(
                    calls.task_id == task_id,
                    calls.agreed.is_(False),
                    ~_human_labelled(calls.id),
                )
            ).scalar_one()
        )


def undo_human_labels(store: Store, request_id: str) -> dict[str, str]:
    """Remove the newest batch of human labels of a call (one review decision); returns the
    removed labels per head, empty when the call had none."""
    labels = t.labels.c
    with store.engine.begin() as conn:
        newest = conn.execute(
            sa.select(sa.func.max(labels.created_at)).where(
                labels.call_id == request_id, labels.source == LabelSource.HUMAN.value
            )
        ).scalar_one()
        if newest is None:
            return {}
        batch = conn.execute(
            sa.select(labels.id, labels.head, labels.value, labels.created_at).where(
                labels.call_id == request_id, labels.source == LabelSource.HUMAN.value
            )
        ).all()
        # The max() above bypasses the column type; compare the typed values read back instead.
        latest = max(row.created_at for row in batch)
        removed = [row for row in batch if row.created_at == latest]
        conn.execute(t.labels.delete().where(labels.id.in_([row.id for row in removed])))
    return {row.head: row.value for row in removed}


def task_keys(store: Store) -> list[str]:
    """Every registered task key, sorted."""
    with store.engine.connect() as conn:
        return list(
            conn.execute(sa.select(t.tasks.c.key).distinct().order_by(t.tasks.c.key))
            .scalars()
            .all()
        )


def training_run_counts(store: Store) -> dict[tuple[str, str], int]:
    """Training runs per (task key, status), over all task versions."""
    runs = t.student_runs.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.tasks.c.key, runs.status, sa.func.count())
            .join(t.tasks, runs.task_id == t.tasks.c.id)
            .group_by(t.tasks.c.key, runs.status)
        ).all()
    return {(key, status): int(n) for key, status, n in rows}


@dataclass(frozen=True)
class TaskGauges:
    """What ``/metrics`` reports per task (newest version): its mode, the calls compared and
    agreed on over the last ``OVERVIEW_DAYS`` days, and unreviewed disagreements."""

    key: str
    mode: Mode
    compared: int
    agreed: int
    review_depth: int


def task_gauges(store: Store, *, now: datetime | None = None) -> list[TaskGauges]:
    """Per-task gauges for a metrics scrape: the agreement counts come from the hourly rollup
    and the review depth from one index count per task, so a scrape stays cheap however many
    calls are logged."""
    since = (now or t.utcnow()) - timedelta(days=OVERVIEW_DAYS)
    calls = t.calls.c
    gauges = []
    with store.engine.connect() as conn:
        for key in task_keys(store):
            row = _latest_task(conn, key)
            recent = rollup.window(conn, row.id, since, _END_OF_TIME)
            depth = conn.execute(
                sa.select(sa.func.count())
                .select_from(t.calls)
                .where(
                    calls.task_id == row.id,
                    calls.agreed.is_(False),
                    ~_human_labelled(calls.id),
                )
            ).scalar_one()
            gauges.append(
                TaskGauges(
                    key=key,
                    mode=Mode(row.mode),
                    compared=sum(p.compared for p in recent),
                    agreed=sum(p.agreed for p in recent),
                    review_depth=int(depth),
                )
            )
    return gauges


# --- calls browser -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallSummary:
    """One line of the calls browser."""

    id: str
    task_key: str | None
    kind: str
    answered_by: str | None
    status_code: int | None
    latency_ms: float | None
    confidence: float | None
    labels: dict[str, str] | None
    text: str
    agreed: bool | None
    created_at: datetime


def search_calls(
    store: Store,
    *,
    task_key: str | None = None,
    answered_by: str | None = None,
    text: str | None = None,
    failed: bool | None = None,
    before: datetime | None = None,
    limit: int = 50,
) -> list[CallSummary]:
    """Logged calls, newest first, filtered by task key (all versions), who answered, a substring
    of the input text (every call with a user message has one) or an exact request id, failure
    (status ≥ 400 or an error), and ``before`` a time (to page: the last row's ``created_at``)."""
    calls = t.calls.c
    query = (
        sa.select(
            calls.id,
            t.tasks.c.key,
            calls.kind,
            calls.answered_by,
            calls.status_code,
            calls.latency_ms,
            calls.confidence,
            calls.labels,
            sa.func.substr(sa.func.coalesce(calls.input_text, ""), 1, 200).label("text"),
            calls.agreed,
            calls.created_at,
        )
        .select_from(t.calls.outerjoin(t.tasks, calls.task_id == t.tasks.c.id))
        .order_by(calls.created_at.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        if task_key is not None:
            ids = (
                conn.execute(sa.select(t.tasks.c.id).where(t.tasks.c.key == task_key))
                .scalars()
                .all()
            )
            # Equality on a single version lets the database walk (task_id, created_at) in order.
            query = query.where(
                calls.task_id == ids[0] if len(ids) == 1 else calls.task_id.in_(ids)
            )
        if answered_by is not None:
            query = query.where(calls.answered_by == answered_by)
        if failed is not None:
            bad = sa.or_(calls.status_code >= 400, calls.error.is_not(None))
            query = query.where(bad if failed else ~bad)
        if before is not None:
            query = query.where(calls.created_at < before)
        rows = conn.execute(query.where(calls.id == text)).all() if text else []
        if not rows:
            if text:
                # Separate from the id lookup: a LIKE alone is answered from the (created_at,
                # input_text) index without reading the wide rows of calls that do not match.
                query = query.where(calls.input_text.like(f"%{_escape_like(text)}%", escape="\\"))
            rows = conn.execute(query).all()
    return [
        CallSummary(
            id=r.id,
            task_key=r.key,
            kind=r.kind,
            answered_by=r.answered_by,
            status_code=r.status_code,
            latency_ms=r.latency_ms,
            confidence=r.confidence,
            labels=r.labels,
            text=r.text,
            agreed=r.agreed,
            created_at=r.created_at,
        )
        for r in rows
    ]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- export ------------------------------------------------------------------------------------


class ExportFormat(StrEnum):
    """File formats of a labelled-data export."""

    JSONL = "jsonl"
    CSV = "csv"


def export_labelled(store: Store, task_key: str, fmt: ExportFormat | str) -> Iterator[str]:
    """The task's labelled examples (newest version; human labels override the teacher's) as
    lines of JSONL (``{"text", "labels", "source", "call_id"}``) or CSV (a header, then ``text``,
    one column per head, ``source``, ``call_id``)."""
    kind = ExportFormat(fmt)
    task = store.get_task(task_key)
    examples = store.examples(task_key)
    if kind is ExportFormat.JSONL:
        for example in examples:
            yield (
                json.dumps(
                    {
                        "text": example.text,
                        "labels": example.labels,
                        "source": example.source.value,
                        "call_id": example.call_id,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        return
    heads = [head.name for head in task.heads]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", *heads, "source", "call_id"])
    for example in examples:
        writer.writerow(
            [
                example.text,
                *(example.labels.get(h, "") for h in heads),
                example.source.value,
                example.call_id,
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
