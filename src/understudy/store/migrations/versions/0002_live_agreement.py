"""Live agreement: the student's labels on calls where it predicted, and whether both sides agreed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("student_labels", sa.JSON, nullable=True))
        batch.add_column(sa.Column("agreed", sa.Boolean, nullable=True))
    op.create_index("ix_calls_task_agreed", "calls", ["task_id", "agreed", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_task_agreed", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("agreed")
        batch.drop_column("student_labels")
