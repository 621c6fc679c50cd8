"""Visit tables (platform data): guest links, the way a third party with no account (an
interpreter, a family member) reaches one visit's waiting room; and join links, the patient's
single-use way into their own visit from an e-mail or a text message."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table

from housecall.core.schema import metadata

# One row per guest link: only the SHA-256 of the token is kept (a copy of the database cannot be
# replayed as links); bound to one organization and one visit (the Appointment), short-lived. The
# first browser that opens the link binds it: the hash of a per-guest secret kept in that browser's
# cookie (``bound_hash``), so a forwarded link lets nobody else in (decision 0021).
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
    Column("bound_hash", String(64), nullable=True),  # the browser that opened it first
    Column("bound", BigInteger, nullable=True),  # when
    Column("name", String(100), nullable=True),  # the name the guest gave on the guest page
    Index("ix_visit_guest_visit", "org_id", "appointment_id"),
    Index("ix_visit_guest_bound", "bound_hash", unique=True),
)

# One row per join link sent to a patient's (or proxy's) account: the token's hash, the visit and
# the account it is for, its expiry, when it was used (single use), and, when it was opened without
# a sign-in, the hash of the visit-only session it started (cookie ``__Host-hc_visit``).
visit_join = Table(
    "visit_join",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("appointment_id", String(64), nullable=False),
    Column("account_id", String(32), nullable=False),
    Column("patient_id", String(64), nullable=False),  # whose visit (a proxy's link acts for them)
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=True),
    Column("session_hash", String(64), nullable=True),
    Column("session_expires", BigInteger, nullable=True),
    Index("ix_visit_join_visit", "org_id", "appointment_id"),
    Index("ix_visit_join_session", "session_hash", unique=True),
)
