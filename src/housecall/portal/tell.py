"""Telling a patient that something new is waiting in the portal, and doing work on their behalf.

``tell_patient`` finds who reads the patient's portal (their own account and every proxy with an
active grant) and hands each one notification to the notification service, inside the caller's
unit of work, so nobody is told about a decision that rolled back. The notification itself says
only "look at Housecall" with a link (no health information, SECURITY.md).

``on_behalf_of`` gives a ``Records`` acting as Housecall itself on the same transaction: a patient
may not write Tasks (the care team's work items), yet asking for a refill has to put one in the
inbox. The portal page checks first, with the patient's own access, that what the work is about
is theirs; the Task is then written by the service, and its audit event goes to the same list as
the page's own.
"""

from __future__ import annotations

from housecall.access.policy import Access
from housecall.core.db import Conn
from housecall.fhir import interactions as ix
from housecall.identity.clock import clock
from housecall.web.records import Records

# The notification kinds these features use (the values of housecall.notify.Kind).
REFILL_DECIDED = "refill_decided"
RESULT_RELEASED = "result_released"


async def readers_of(conn: Conn, org_id: str, patient_id: str) -> list[str]:
    """Account ids of the patient and of their proxies with an active grant, enabled accounts only."""
    rows = await conn.fetch(
        "SELECT id FROM account WHERE org_id = $1 AND patient_id = $2 AND disabled = $3 ORDER BY id",
        org_id, patient_id, False,
    )  # fmt: skip
    now = clock.now_us()
    grants = await conn.fetch(
        "SELECT g.proxy_account_id FROM proxy_grant g JOIN account a ON a.id = g.proxy_account_id "
        "WHERE g.org_id = $1 AND g.patient_id = $2 AND g.revoked IS NULL AND g.since <= $3 "
        "AND (g.until IS NULL OR g.until > $3) AND a.disabled = $4 ORDER BY g.proxy_account_id",
        org_id, patient_id, now, False,
    )  # fmt: skip
    return list(dict.fromkeys([str(r[0]) for r in rows] + [str(r[0]) for r in grants]))


async def _send(conn: Conn, org_id: str, account_id: str, kind: str, path: str) -> None:
    """One notification. Wired to ``housecall.notify.send(conn, org_id, account_id, Kind(kind),
    path)`` when the notification service is merged (it is not on this branch's main yet)."""
    return None


async def tell_patient(conn: Conn, org_id: str, patient_id: str, kind: str, path: str) -> list[str]:
    """Tell everyone who reads ``patient_id``'s portal to look at ``path``; returns their accounts."""
    accounts = await readers_of(conn, org_id, patient_id)
    for account_id in accounts:
        await _send(conn, org_id, account_id, kind, path)
    return accounts


def on_behalf_of(rec: Records) -> Records:
    """Housecall's own access on ``rec``'s transaction, its audit events kept with ``rec``'s."""
    ctx = rec.ctx
    service = ix.Ctx(ctx.conn, ctx.settings, ctx.base_url, Access.system(rec.actor.org_id))
    return Records(service, rec.address, rec.entries)
