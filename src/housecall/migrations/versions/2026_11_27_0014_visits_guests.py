"""visit_guest bound to the first browser, and visit_join: single-use join links (issue 5)

Revision ID: visits_guests
Revises: 0013
Create Date: 2026-11-27 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "visits_guests"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("visit_guest") as batch:
        batch.add_column(sa.Column("bound_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("bound", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
    op.create_index("ix_visit_guest_bound", "visit_guest", ["bound_hash"], unique=True)
    op.create_table(
        "visit_join",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("appointment_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=True),
        sa.Column("session_hash", sa.String(64), nullable=True),
        sa.Column("session_expires", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_visit_join_visit", "visit_join", ["org_id", "appointment_id"])
    op.create_index("ix_visit_join_session", "visit_join", ["session_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_visit_join_session", "visit_join")
    op.drop_index("ix_visit_join_visit", "visit_join")
    op.drop_table("visit_join")
    op.drop_index("ix_visit_guest_bound", "visit_guest")
    with op.batch_alter_table("visit_guest") as batch:
        batch.drop_column("name")
        batch.drop_column("bound")
        batch.drop_column("bound_hash")
