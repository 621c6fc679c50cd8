"""every resource belongs to one organization (tenant): resource.org_id, resource_history.org_id

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 08:00:00

Resources stored before organizations existed go to the organization ``default``, created here
when there are such resources (an operator can rename it). No query crosses organizations.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LEGACY_ORG = "default"


def upgrade() -> None:
    for table in ("resource", "resource_history"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("org_id", sa.String(64), nullable=False, server_default=LEGACY_ORG))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("org_id", server_default=None)
    bind = op.get_bind()
    has_resources = bind.execute(sa.text("SELECT 1 FROM resource LIMIT 1")).first() is not None
    known = bind.execute(sa.text("SELECT 1 FROM organization WHERE id = :id"), {"id": LEGACY_ORG}).first()
    if has_resources and known is None:
        bind.execute(
            sa.text("INSERT INTO organization (id, name, fhir_id, created) VALUES (:id, :name, NULL, :now)"),
            {"id": LEGACY_ORG, "name": "Default organization", "now": time.time_ns() // 1000},
        )


def downgrade() -> None:
    for table in ("resource_history", "resource"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("org_id")
