"""Telling the patient (and the people they trust) that the care team wrote back.

The notice itself says only "you have a new message" with a link (``housecall.notify``: fixed
text, no health information); this module finds whom to tell: the patient's own account and the
accounts of proxies whose grant for the patient is active now.
"""

from __future__ import annotations

import importlib
from typing import Any

from housecall.core.db import Conn
from housecall.identity.clock import clock


async def accounts_for_patient(conn: Conn, org_id: str, patient_id: str) -> list[str]:
    """Ids of the enabled accounts that read ``patient_id``'s messages: the patient's own, and
    every proxy with an active grant (in the organization)."""
    rows = await conn.fetch(
        "SELECT id, disabled FROM account WHERE org_id = $1 AND patient_id = $2 AND kind = 'patient'",
        org_id,
        patient_id,
    )
    out = [r[0] for r in rows if not r[1]]
    now = clock.now_us()
    grants = await conn.fetch(
        "SELECT g.proxy_account_id, g.since, g.until, g.revoked, a.disabled FROM proxy_grant g "
        "JOIN account a ON a.id = g.proxy_account_id WHERE g.org_id = $1 AND g.patient_id = $2",
        org_id,
        patient_id,
    )
    for account_id, since, until, revoked, disabled in grants:
        active = revoked is None and int(since) <= now and (until is None or now < int(until))
        if active and not disabled and account_id not in out:
            out.append(account_id)
    return out


def _notify() -> Any | None:
    """``housecall.notify`` when the build has it (it is being built alongside messaging)."""
    try:
        return importlib.import_module("housecall.notify")
    except ModuleNotFoundError:
        return None


async def tell_patient(conn: Conn, org_id: str, patient_id: str, link: str) -> int:
    """In the reply's unit of work: a NEW_MESSAGE notice with ``link`` to each account that reads
    the patient's messages. Returns how many were queued (0 while notifications are not built)."""
    notify = _notify()
    if notify is None:
        return 0
    sent = 0
    for account_id in await accounts_for_patient(conn, org_id, patient_id):
        await notify.send(conn, org_id, account_id, notify.Kind.NEW_MESSAGE, link)
        sent += 1
    return sent
