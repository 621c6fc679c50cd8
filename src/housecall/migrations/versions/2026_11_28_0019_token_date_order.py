"""Token rows carry their resource's date as a sort key; the patient follows the code in their index

"This patient's latest readings of code C" (`Observation?subject=…&code=…&_sort=-date`) sorted
every match by a per-match lookup of its date: 160 ms for 20,000 readings on PostgreSQL. With
`date_order` (minus the latest instant of the resource's `date`) before `res_id` in the lookup
index, the newest come first in one index range and a page reads a page of rows. And with `pat`
before `system`, a code searched without its system (`status=final`) for one patient is one range
of that patient's rows; after `system` it read every patient's rows of the code
(docs/decisions/0031). Existing rows get the key from their resource's date rows; on a large store
the update and the index rebuild take a while.

Revision ID: token_date_order
Revises: subset_alias_rows
Create Date: 2026-11-28 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "token_date_order"
down_revision = "subset_alias_rows"
branch_labels = None
depends_on = None

NO_DATE_ORDER = 2**63 - 1  # indexing.NO_DATE_ORDER when this was written


def upgrade() -> None:
    op.add_column(
        "sp_token",
        sa.Column("date_order", sa.BigInteger(), nullable=False, server_default=sa.text(str(NO_DATE_ORDER))),
    )
    op.execute(
        "UPDATE sp_token SET date_order = -(SELECT max(d.hi) FROM sp_date d WHERE d.res_type = sp_token.res_type "
        "AND d.res_id = sp_token.res_id AND d.param = 'date') "
        "WHERE EXISTS (SELECT 1 FROM sp_date d WHERE d.res_type = sp_token.res_type "
        "AND d.res_id = sp_token.res_id AND d.param = 'date')"
    )
    op.drop_index("ix_sp_token_lookup", table_name="sp_token")
    op.create_index(
        "ix_sp_token_lookup",
        "sp_token",
        ["res_type", "param", "code", "pat", "system", "date_order", "res_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_sp_token_lookup", table_name="sp_token")
    op.create_index(
        "ix_sp_token_lookup", "sp_token", ["res_type", "param", "code", "system", "pat", "res_id"]
    )
    with op.batch_alter_table("sp_token") as batch:
        batch.drop_column("date_order")
