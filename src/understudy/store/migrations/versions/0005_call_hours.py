"""The hourly rollup of calls (``call_hours``) and the triggers that keep it honest.

The query layer (``understudy.store.rollup``) fills an hour's rows the first time it reads a
closed hour. Calls can still be written into an hour after that: the gateway's write-behind call
log commits calls stamped seconds (or, replaying a journal after a crash, hours) earlier, and an
audit sets ``agreed`` on a call long after it was logged. The triggers below delete a task's
rolled-up rows for an hour whenever a call of that hour is inserted, deleted, or has a column the
rollup aggregates updated, so the next read computes the hour again from the calls. They live in
the database so that every writer (each gateway replica, the worker, a journal replay, the CLI)
invalidates alike, without any of them knowing about the rollup.

``hour`` is whole hours since the Unix epoch in UTC: ``created_at`` is stored in UTC on both
backends, so the triggers and Python (``rollup.hour_of``) compute the same number.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The columns of ``calls`` the rollup aggregates: updating any of them invalidates the hour.
AGGREGATED = (
    "task_id",
    "created_at",
    "kind",
    "answered_by",
    "teacher_model",
    "status_code",
    "agreed",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
)
_COLUMNS = ", ".join(AGGREGATED)


def _sqlite_drop(row: str) -> str:
    # strftime('%s') reads SQLAlchemy's stored form ('YYYY-MM-DD HH:MM:SS.ffffff', UTC).
    return (
        f"DELETE FROM call_hours WHERE task_id = {row}.task_id"
        f" AND hour = CAST(strftime('%s', {row}.created_at) AS INTEGER) / 3600;"
    )


SQLITE_TRIGGERS = {
    "call_hours_after_insert": (
        f"CREATE TRIGGER call_hours_after_insert AFTER INSERT ON calls"
        f" WHEN NEW.task_id IS NOT NULL BEGIN {_sqlite_drop('NEW')} END"
    ),
    "call_hours_after_update": (
        f"CREATE TRIGGER call_hours_after_update AFTER UPDATE OF {_COLUMNS} ON calls"
        f" BEGIN {_sqlite_drop('OLD')} {_sqlite_drop('NEW')} END"
    ),
    "call_hours_after_delete": (
        f"CREATE TRIGGER call_hours_after_delete AFTER DELETE ON calls"
        f" WHEN OLD.task_id IS NOT NULL BEGIN {_sqlite_drop('OLD')} END"
    ),
}

POSTGRES_FUNCTION = """
CREATE FUNCTION call_hours_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.task_id IS NOT NULL THEN
        DELETE FROM call_hours WHERE task_id = OLD.task_id
            AND hour = floor(extract(epoch FROM OLD.created_at) / 3600)::integer;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.task_id IS NOT NULL THEN
        DELETE FROM call_hours WHERE task_id = NEW.task_id
            AND hour = floor(extract(epoch FROM NEW.created_at) / 3600)::integer;
    END IF;
    RETURN NULL;
END
$$
"""
POSTGRES_TRIGGER = (
    f"CREATE TRIGGER call_hours_invalidate AFTER INSERT OR DELETE OR UPDATE OF {_COLUMNS}"
    " ON calls FOR EACH ROW EXECUTE FUNCTION call_hours_invalidate()"
)


def _dialect() -> str:
    name = op.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise RuntimeError(f"understudy runs on SQLite or PostgreSQL, not {name}")
    return name


def upgrade() -> None:
    dialect = _dialect()
    op.create_table(
        "call_hours",
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("hour", sa.Integer, nullable=False),
        sa.Column("side", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("teacher_model", sa.String(200), nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("ok_calls", sa.Integer, nullable=False),
        sa.Column("compared", sa.Integer, nullable=False),
        sa.Column("agreed", sa.Integer, nullable=False),
        sa.Column("latency_n", sa.Integer, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("task_id", "hour", "side", "kind", "teacher_model"),
    )
    if dialect == "sqlite":
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)
    else:
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)


def downgrade() -> None:
    if _dialect() == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    else:
        op.execute("DROP TRIGGER call_hours_invalidate ON calls")
        op.execute("DROP FUNCTION call_hours_invalidate()")
    op.drop_table("call_hours")
