"""Initial schema: tasks, calls, labels, events, student_runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("schema", sa.JSON, nullable=False),
        sa.Column("heads", sa.JSON, nullable=False),
        sa.Column("free_text_fields", sa.JSON, nullable=False),
        sa.Column("required_free_text", sa.JSON, nullable=False),
        sa.Column("mode", sa.String(20), nullable=False, server_default="shadow"),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("target_agreement", sa.Float, nullable=True),
        sa.Column("audit_rate", sa.Float, nullable=True),
        sa.Column("serving_version", sa.String(50), nullable=True),
        sa.Column("template_prefix", sa.Text, nullable=True),
        sa.Column("template_suffix", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("key", "version", name="uq_tasks_key_version"),
    )
    op.create_table(
        "calls",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False, server_default=sa.false()),
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
        sa.Column("heldout", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_calls_task_created", "calls", ["task_id", "created_at"])
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(64), sa.ForeignKey("calls.id"), nullable=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("head", sa.String(200), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_labels_task", "labels", ["task_id"])
    op.create_index("ix_labels_call", "labels", ["call_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("from_mode", sa.String(20), nullable=True),
        sa.Column("to_mode", sa.String(20), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("evidence", sa.JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_events_task_created", "events", ["task_id", "created_at"])
    op.create_table(
        "student_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("version", sa.String(50), nullable=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_student_runs_task", "student_runs", ["task_id"])


def downgrade() -> None:
    for table in ("student_runs", "events", "labels", "calls", "tasks"):
        op.drop_table(table)
