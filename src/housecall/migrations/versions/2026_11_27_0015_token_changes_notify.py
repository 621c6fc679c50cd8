"""PostgreSQL: a change to what a bearer token's check reads notifies every server process

Each process remembers the tokens it has checked (``smart.tokens.LiveTokens``, decision 0027)
and forgets them all on this notification, sent by the committing transaction. SQLite serves
one process and checks every token, so it needs nothing.

Revision ID: token_changes_notify
Revises: visits_guests
Create Date: 2026-11-27 16:30:00
"""

from __future__ import annotations

from alembic import op

revision = "token_changes_notify"
down_revision = "visits_guests"
branch_labels = None
depends_on = None

TABLES = ("oauth_token", "oauth_grant", "account", "proxy_grant")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION housecall_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN PERFORM pg_notify('housecall_auth', ''); RETURN NULL; END $$"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_changed AFTER UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION housecall_auth_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_changed ON {table}")
    op.execute("DROP FUNCTION IF EXISTS housecall_auth_changed()")
