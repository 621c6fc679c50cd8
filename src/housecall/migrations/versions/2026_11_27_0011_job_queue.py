"""job: durable background jobs (reminders, notifications) worked by housecall worker

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 09:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("args", sa.String, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("run_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.BigInteger, nullable=True),
        sa.Column("dedupe_key", sa.String(200), nullable=True, unique=True),
        sa.Column("error", sa.String(100), nullable=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("finished", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_job_due", "job", ["state", "run_at"])


def downgrade() -> None:
    op.drop_index("ix_job_due", "job")
    op.drop_table("job")
