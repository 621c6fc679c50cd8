"""resource_history holds the earlier versions only; the current one lives in resource

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 06:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Each resource's JSON was stored twice (current row and its history row); keep one.
    op.execute(
        "DELETE FROM resource_history WHERE EXISTS (SELECT 1 FROM resource r WHERE r.res_type = "
        "resource_history.res_type AND r.res_id = resource_history.res_id AND r.version = resource_history.version)"
    )


def downgrade() -> None:
    op.execute(
        "INSERT INTO resource_history (res_type, res_id, version, last_updated, deleted, method, content) "
        "SELECT res_type, res_id, version, last_updated, deleted, "
        "CASE WHEN deleted THEN 'DELETE' WHEN version = 1 THEN 'POST' ELSE 'PUT' END, content FROM resource"
    )
