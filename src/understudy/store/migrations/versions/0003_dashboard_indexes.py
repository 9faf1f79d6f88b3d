"""Indexes for the dashboard, the review queue and the metrics collector.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# name -> (table, columns); each serves one query family of ``understudy.store.queries``.
INDEXES = {
    # per-side counts and mean latency over a time range (covering: no row lookups), and the
    # newest calls of one side (latency percentiles)
    "ix_calls_task_side_created": (
        "calls",
        ["task_id", "answered_by", "created_at", "latency_ms"],
    ),
    # the review queue's low-confidence slice
    "ix_calls_task_confidence": ("calls", ["task_id", "confidence"]),
    # the review queue's random slice: a walk along a task's ids from a random point
    "ix_calls_task_id": ("calls", ["task_id", "id"]),
    # a task's label distribution (under-represented labels)
    "ix_labels_task_head_value": ("labels", ["task_id", "head", "value"]),
    # labelled-call counts per task and source, and a task's human (gold) labels
    "ix_labels_task_call_source": ("labels", ["task_id", "call_id", "source"]),
    # "has this call a human label yet?" for every review-queue candidate
    "ix_labels_call_source": ("labels", ["call_id", "source"]),
}
# The calls browser across all tasks, newest first. On SQLite the index also holds the input
# text, so a text search scans this narrow index instead of the wide rows (request and response
# JSON live inline): about 5x faster at 100k calls. PostgreSQL caps a B-tree entry at ~2.7 kB, so
# long inputs cannot be indexed there; it gets the plain time index.
SQLITE_INDEXES = {"ix_calls_created_text": ("calls", ["created_at", "input_text"])}
OTHER_INDEXES = {"ix_calls_created": ("calls", ["created_at"])}


def _indexes() -> dict[str, tuple[str, list[str]]]:
    sqlite = op.get_bind().dialect.name == "sqlite"
    return {**INDEXES, **(SQLITE_INDEXES if sqlite else OTHER_INDEXES)}


def upgrade() -> None:
    for name, (table, columns) in _indexes().items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in _indexes().items():
        op.drop_index(name, table_name=table)
