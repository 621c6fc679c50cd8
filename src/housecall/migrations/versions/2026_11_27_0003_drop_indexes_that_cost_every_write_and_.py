"""drop indexes that cost every write and serve rare queries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 06:12:50.045428
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resource_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_history_type_updated"))

    with op.batch_alter_table("sp_reference", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sp_reference_target"))


def downgrade() -> None:
    with op.batch_alter_table("sp_reference", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sp_reference_target"), ["target_type", "target_id"], unique=False
        )

    with op.batch_alter_table("resource_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_history_type_updated"), ["res_type", "last_updated"], unique=False
        )
