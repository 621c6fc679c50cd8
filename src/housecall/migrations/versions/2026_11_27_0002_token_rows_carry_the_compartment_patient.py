"""token rows carry the patient reference that puts them in a compartment

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:29:49.362524
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sp_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pat", sa.String(length=160), nullable=True))
        batch_op.drop_index(batch_op.f("ix_sp_token_lookup"))
        batch_op.create_index(
            "ix_sp_token_lookup", ["res_type", "param", "code", "system", "pat", "res_id"], unique=False
        )
    # Existing rows: one copy per (parameter, Patient) reference of a compartment patient, then
    # drop the originals of resources that have one.
    op.execute(
        "INSERT INTO sp_token (res_type, res_id, param, system, code, text, pat) "
        "SELECT DISTINCT t.res_type, t.res_id, t.param, t.system, t.code, t.text, r.param || '|' || r.target_id "
        "FROM sp_token t JOIN sp_reference r ON r.res_type = t.res_type AND r.res_id = t.res_id "
        "AND r.target_type = 'Patient' JOIN compartment c ON c.res_type = t.res_type AND c.res_id = t.res_id "
        "AND c.patient_id = r.target_id WHERE t.pat IS NULL"
    )
    op.execute(
        "DELETE FROM sp_token WHERE pat IS NULL AND EXISTS (SELECT 1 FROM sp_token o "
        "WHERE o.res_type = sp_token.res_type AND o.res_id = sp_token.res_id AND o.pat IS NOT NULL)"
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM sp_token WHERE pat IS NOT NULL AND pat <> (SELECT min(o.pat) FROM sp_token o "
        "WHERE o.res_type = sp_token.res_type AND o.res_id = sp_token.res_id)"
    )
    with op.batch_alter_table("sp_token", schema=None) as batch_op:
        batch_op.drop_index("ix_sp_token_lookup")
        batch_op.create_index(
            batch_op.f("ix_sp_token_lookup"), ["res_type", "param", "code", "system", "res_id"], unique=False
        )
        batch_op.drop_column("pat")
