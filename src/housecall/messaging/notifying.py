"""Telling the patient (and the people they trust) that the care team wrote back.

The notice itself says only "you have a new message" with a link (``housecall.notify``: fixed
text, no health information), to every account that reads the patient's record.
"""

from __future__ import annotations

from housecall import notify
from housecall.core.db import Conn
from housecall.identity.service import accounts_for_patient


async def tell_patient(conn: Conn, org_id: str, patient_id: str, link: str) -> int:
    """In the reply's unit of work: a NEW_MESSAGE notice with ``link`` to each account that reads
    the patient's messages. Returns how many were queued."""
    accounts = await accounts_for_patient(conn, org_id, patient_id)
    for account_id, _email in accounts:
        await notify.send(conn, org_id, account_id, notify.Kind.NEW_MESSAGE, link)
    return len(accounts)
