"""Guest links: how a third party without an account (an interpreter, a family member) reaches one
visit. The link carries a random token; only its hash is stored, bound to the organization and the
visit, and it stops working after ``LIFETIME_US``. A guest still waits until a clinician admits
them, like everyone else."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from housecall.core.db import Conn
from housecall.identity.clock import clock

LIFETIME_US = 2 * 3600 * 1_000_000


@dataclass(frozen=True)
class Guest:
    org_id: str
    appointment_id: str
    label: str


def _hash(raw: str) -> str:
    return hashlib.sha256(("visit-guest:" + raw).encode()).hexdigest()


async def make_link(conn: Conn, *, org_id: str, appointment_id: str, label: str, account_id: str) -> str:
    """A new guest token for the visit (the caller checked the account is the visit's clinician)."""
    raw = secrets.token_urlsafe(24)
    now = clock.now_us()
    await conn.execute(
        "INSERT INTO visit_guest (token_hash, org_id, appointment_id, label, created_by, created, expires) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        _hash(raw), org_id, appointment_id, label[:100], account_id, now, now + LIFETIME_US,
    )  # fmt: skip
    return raw


async def guest_for(conn: Conn, raw: str, appointment_id: str) -> Guest | None:
    """The guest a live token names for this visit, or None (unknown, expired, another visit)."""
    if not raw or len(raw) > 100:
        return None
    row = await conn.fetchrow(
        "SELECT org_id, appointment_id, label, expires FROM visit_guest WHERE token_hash = $1", _hash(raw)
    )
    if row is None or int(row[3]) <= clock.now_us() or row[1] != appointment_id:
        return None
    return Guest(row[0], row[1], row[2])
