"""visit_guest: guest links to one virtual visit's waiting room (issue 5)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visit_guest",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("appointment_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_visit_guest_visit", "visit_guest", ["org_id", "appointment_id"])


def downgrade() -> None:
    op.drop_index("ix_visit_guest_visit", "visit_guest")
    op.drop_table("visit_guest")
