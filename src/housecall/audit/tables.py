"""Audit trail tables (platform data, append-only): the events and the hash chain that seals them.

Registered on ``core.schema.metadata`` (which imports this module) so Alembic sees them. The
migration adds triggers that refuse UPDATE, DELETE and TRUNCATE on both tables, on both engines:
the application can only append. Why two tables and a chain built after the insert, rather than
a hash column filled inside the request's transaction: docs/decisions/0007-audit-trail.md.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table

from housecall.core.schema import metadata

# SQLite only auto-numbers an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a BIGINT identity.
_Seq = BigInteger().with_variant(Integer(), "sqlite")

# One row per AuditEvent (one per patient when a request touched several, as BALP recommends).
# ``event`` holds the AuditEvent JSON bytes exactly as hashed; the other columns repeat what the
# queries need ("who looked at my record", "what did this user open") and are hashed too.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("org_id", String(64), nullable=False),
    Column("recorded", BigInteger, nullable=False),  # µs since the epoch, UTC
    Column("patient_id", String(64), nullable=True),  # the patient entity, None when there is none
    Column("agent", String(200), nullable=True),  # the requesting agent: fhirUser, account or client
    Column("event", LargeBinary, nullable=False),
    # The only secondary index: every audited read pays for each index; a per-agent index for the
    # privacy officer's "what did this user open" can come with that page.
    Index("ix_audit_log_patient", "org_id", "patient_id", "recorded"),
)

# The hash chain: position ``pos`` (1, 2, 3 … without gaps) seals event ``seq`` with
# hash = SHA-256(hash at pos-1 ‖ canonical bytes of the event row). Positions follow the order in
# which the sealer found the events, which is seq order except for an event whose transaction
# committed after later ones had been sealed.
audit_seal = Table(
    "audit_seal",
    metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("hash", LargeBinary, nullable=False),
)
