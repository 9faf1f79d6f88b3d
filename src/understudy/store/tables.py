"""SQLAlchemy Core descriptions of the tables, for building queries.

The migrations under ``store/migrations`` own the schema; these objects mirror it so queries are
typed, and a test checks that both agree column for column.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("via", sa.String(20), nullable=False),
    sa.Column("schema", sa.JSON, nullable=False),
    sa.Column("heads", sa.JSON, nullable=False),
    sa.Column("free_text_fields", sa.JSON, nullable=False),
    sa.Column("required_free_text", sa.JSON, nullable=False),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("target_agreement", sa.Float, nullable=True),
    sa.Column("audit_rate", sa.Float, nullable=True),
    sa.Column("serving_version", sa.String(50), nullable=True),
    sa.Column("template_prefix", sa.Text, nullable=True),
    sa.Column("template_suffix", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("key", "version", name="uq_tasks_key_version"),
)

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("request", sa.JSON, nullable=True),
    sa.Column("response", sa.JSON, nullable=True),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("user_text", sa.Text, nullable=True),
    sa.Column("input_text", sa.Text, nullable=True),
    sa.Column("labels", sa.JSON, nullable=True),
    sa.Column("soft_labels", sa.JSON, nullable=True),
    sa.Column("answered_by", sa.String(20), nullable=True),
    sa.Column("student_version", sa.String(50), nullable=True),
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("teacher_model", sa.String(200), nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=True),
    sa.Column("completion_tokens", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("heldout", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("student_labels", sa.JSON, nullable=True),
    sa.Column("agreed", sa.Boolean, nullable=True),
    sa.Index("ix_calls_task_created", "task_id", "created_at"),
    sa.Index("ix_calls_task_agreed", "task_id", "agreed", "created_at"),
    sa.Index("ix_calls_task_side_created", "task_id", "answered_by", "created_at", "latency_ms"),
    sa.Index("ix_calls_task_confidence", "task_id", "confidence"),
    sa.Index("ix_calls_task_id", "task_id", "id"),
    # Per dialect (see migration 0003): PostgreSQL caps the size of a B-tree entry.
    sa.Index("ix_calls_created", "created_at").ddl_if(dialect="postgresql"),
    sa.Index("ix_calls_created_text", "created_at", "input_text").ddl_if(dialect="sqlite"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(64), sa.ForeignKey("calls.id"), nullable=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("head", sa.String(200), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("author", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_labels_task", "task_id"),
    sa.Index("ix_labels_call", "call_id"),
    sa.Index("ix_labels_task_head_value", "task_id", "head", "value"),
    sa.Index("ix_labels_task_call_source", "task_id", "call_id", "source"),
    sa.Index("ix_labels_call_source", "call_id", "source"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("from_mode", sa.String(20), nullable=True),
    sa.Column("to_mode", sa.String(20), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("evidence", sa.JSON, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_events_task_created", "task_id", "created_at"),
)

student_runs = sa.Table(
    "student_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("version", sa.String(50), nullable=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("metrics", sa.JSON, nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Index("ix_student_runs_task", "task_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("prefix", sa.String(20), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("digest", name="uq_api_keys_digest"),
)

# The hourly rollup of calls (see ``understudy.store.rollup``): one row per task, hour, answering
# side, call kind and teacher model; migration 0005 also installs the triggers that drop an hour's
# rows when a call of that hour is written after it was rolled up.
call_hours = sa.Table(
    "call_hours",
    metadata,
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("hour", sa.Integer, primary_key=True),
    sa.Column("side", sa.String(20), primary_key=True),
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("teacher_model", sa.String(200), primary_key=True),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("ok_calls", sa.Integer, nullable=False),
    sa.Column("compared", sa.Integer, nullable=False),
    sa.Column("agreed", sa.Integer, nullable=False),
    sa.Column("latency_n", sa.Integer, nullable=False),
    sa.Column("latency_sum_ms", sa.Float, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
)

# The worker's heartbeat (one row, id 1): the process that holds the worker lock, since when, and
# when it last finished a pass (``understudy.store.switch.record_worker_pass``).
worker_heartbeat = sa.Table(
    "worker_heartbeat",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("last_pass_at", UTCDateTime, nullable=True),
)
