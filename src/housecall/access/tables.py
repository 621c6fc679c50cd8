"""Access tables (platform data): emergency "break-glass" openings of a patient's record."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from housecall.core.schema import metadata

# One row per emergency opening: who, whose record, why, from when until when (µs since the
# epoch). ``closed`` is set when it ends early; otherwise it ends at ``ends``.
break_glass = Table(
    "break_glass",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("account_id", String(32), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("started", BigInteger, nullable=False),
    Column("ends", BigInteger, nullable=False),
    Column("closed", BigInteger, nullable=True),
    Index("ix_break_glass_account", "account_id", "ends"),
)
