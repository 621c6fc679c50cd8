"""PostgreSQL: large stored JSON is compressed with LZ4 instead of pglz

An audit event that names a Bundle's hundred resources is ~15 KB; PostgreSQL compresses any value
over ~2 KB as it stores it, and with its default method (pglz) that cost a transaction Bundle more
than its commit: 3.2 ms against 1.3 ms with LZ4 for ten such events, which also come out smaller.
Resource JSON over 2 KB (a Synthea Patient, a DocumentReference) is compressed the same way.
Only new values are affected; existing ones stay readable as they are. A server built without LZ4
keeps pglz, and so does SQLite, which compresses nothing.

Revision ID: lz4_compression
Revises: token_changes_notify
Create Date: 2026-11-27 20:00:00
"""

from __future__ import annotations

from alembic import op

revision = "lz4_compression"
down_revision = "token_changes_notify"
branch_labels = None
depends_on = None

COLUMNS = (("audit_log", "event"), ("resource", "content"), ("resource_history", "content"))


def _set(method: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    statements = " ".join(f"ALTER TABLE {t} ALTER COLUMN {c} SET COMPRESSION {method};" for t, c in COLUMNS)
    # feature_not_supported: a server compiled without LZ4.
    op.execute(f"DO $$ BEGIN {statements} EXCEPTION WHEN feature_not_supported THEN NULL; END $$")


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("pglz")
