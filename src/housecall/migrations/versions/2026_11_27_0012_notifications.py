"""notifications: preferences, one delivery row per channel, the local SMS and push outbox

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_preference",
        sa.Column("account_id", sa.String(32), sa.ForeignKey("account.id"), primary_key=True),
        sa.Column("email", sa.Boolean, nullable=False),
        sa.Column("sms", sa.Boolean, nullable=False),
        sa.Column("push", sa.Boolean, nullable=False),
        sa.Column("phone", sa.String(16), nullable=True),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notification",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("notification_id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("address", sa.String(254), nullable=False),
        sa.Column("address_masked", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("link", sa.String(500), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.String(100), nullable=True),
        sa.Column("dedupe_key", sa.String(200), nullable=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("claimed", sa.BigInteger, nullable=True),
        sa.Column("sent", sa.BigInteger, nullable=True),
    )
    op.create_index("ux_notification_channel", "notification", ["notification_id", "channel"], unique=True)
    op.create_index("ix_notification_org_created", "notification", ["org_id", "created"])
    op.create_table(
        "notification_outbox",
        sa.Column("delivery_id", sa.String(32), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("address", sa.String(254), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_notification_outbox_org_created", "notification_outbox", ["org_id", "created"])


def downgrade() -> None:
    op.drop_index("ix_notification_outbox_org_created", "notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_index("ix_notification_org_created", "notification")
    op.drop_index("ux_notification_channel", "notification")
    op.drop_table("notification")
    op.drop_table("notification_preference")
