"""Drop the index rows of Observation's combo-* parameters: they are answered from their parts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 06:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COMBO = "('combo-code', 'combo-data-absent-reason', 'combo-value-concept', 'combo-value-quantity')"


def upgrade() -> None:
    # The search layer now reads combo-X as "code X or component X" (indexing.UNION_ALIASES); the
    # copies written before are dead weight.
    for table in ("sp_token", "sp_quantity"):
        op.execute(f"DELETE FROM {table} WHERE res_type = 'Observation' AND param IN {COMBO}")


def downgrade() -> None:
    # Re-derive them from their parts, as the indexer used to write them.
    for table, columns in (
        ("sp_token", "system, code, text, pat"),
        ("sp_quantity", "value, system, code, unit"),
    ):
        for combo, parts in (
            ("combo-code", "'code', 'component-code'"),
            ("combo-data-absent-reason", "'data-absent-reason', 'component-data-absent-reason'"),
            ("combo-value-concept", "'value-concept', 'component-value-concept'"),
            ("combo-value-quantity", "'value-quantity', 'component-value-quantity'"),
        ):
            op.execute(
                f"INSERT INTO {table} (res_type, res_id, param, {columns}) SELECT DISTINCT res_type, res_id, "
                f"'{combo}', {columns} FROM {table} WHERE res_type = 'Observation' AND param IN ({parts})"
            )
