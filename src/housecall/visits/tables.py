"""Visit tables (platform data): guest links, the way a third party with no account (an
interpreter, a family member) reaches one visit's waiting room."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table

from housecall.core.schema import metadata

# One row per guest link: only the SHA-256 of the token is kept (a copy of the database cannot be
# replayed as links); bound to one organization and one visit (the Appointment), short-lived.
visit_guest = Table(
    "visit_guest",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("appointment_id", String(64), nullable=False),
    Column("label", String(100), nullable=False),  # how the clinician named the guest ("Interpreter")
    Column("created_by", String(32), nullable=False),  # the account that made the link
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Index("ix_visit_guest_visit", "org_id", "appointment_id"),
)
