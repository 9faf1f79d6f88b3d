"""The worker's heartbeat: which process acts on the database, since when, and its last pass.

One row (``id`` 1), written by the worker that holds the worker lock when it takes it and after
every pass, so the gateway's ``/metrics``, dashboard and ``understudy doctor`` can tell a stuck
worker (holding the lock, finishing no pass) from a busy one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeat",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_pass_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeat")
