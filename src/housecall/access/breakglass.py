"""Emergency ("break-glass") access to a patient's record (SECURITY.md row 8).

A clinician or nurse without a care relationship opens one patient's record for a stated reason,
after proving their password (and second factor) again, for at most ``MAX_MINUTES``. While it is
open the access path grants that patient (``policy.break_glass_patients``); it ends when its time
is up or when the clinician ends it, whichever comes first. Its start and its end are audit events
of their own, and the patient and the organization's privacy officers are told by e-mail (no health
information in it, only that it happened and where to look).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from housecall.access.actor import Actor, ActorKind, Role
from housecall.access.policy import CLINICAL_ROLES
from housecall.audit.events import Action, AuditRequest, Outcome, entries_for
from housecall.audit.trail import append
from housecall.core.db import Conn, Database
from housecall.core.mail import Mail, Outbox
from housecall.fhir.store import Store
from housecall.identity.clock import clock
from housecall.web.i18n import Msg

log = logging.getLogger(__name__)

MAX_MINUTES = 60
DEFAULT_MINUTES = 30
MIN_REASON = 10  # characters: "emergency" alone is not a reason


class BreakGlassError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Opening:
    id: str
    org_id: str
    account_id: str
    patient_id: str
    reason: str
    started: int
    ends: int
    closed: int | None

    def open_at(self, now: int) -> bool:
        return self.closed is None and self.started <= now < self.ends


_COLUMNS = "id, org_id, account_id, patient_id, reason, started, ends, closed"


def may_break_glass(actor: Actor) -> bool:
    return actor.account_id is not None and (
        actor.kind is ActorKind.PRACTITIONER or bool(actor.roles & CLINICAL_ROLES - {Role.INTERPRETER})
    )


async def open_record(
    conn: Conn, actor: Actor, patient_id: str, reason: str, minutes: int, now: int, outbox: Outbox
) -> Opening:
    """Open ``patient_id``'s record for ``actor`` (who has just re-authenticated: the caller's job).
    Records the start in the audit trail and queues the e-mails; the caller commits, then sends."""
    if not may_break_glass(actor):
        raise BreakGlassError(Msg("Only clinicians and nurses can open a record in an emergency."), "form")
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON:
        raise BreakGlassError(Msg("Say why you need the record now (at least a sentence)."), "reason")
    if not 1 <= minutes <= MAX_MINUTES:
        raise BreakGlassError(Msg("Choose from 1 to %(n)s minutes.", n=MAX_MINUTES), "minutes")
    patient = await Store(conn, actor.org_id).read("Patient", patient_id)
    if patient is None or patient.deleted:
        raise BreakGlassError(Msg("There is no patient with that id in this organization."), "patient")
    assert actor.account_id is not None
    opening = Opening(secrets.token_hex(16), actor.org_id, actor.account_id, patient_id, reason[:2000], now,
                      now + minutes * 60_000_000, None)  # fmt: skip
    await conn.execute(
        f"INSERT INTO break_glass ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        opening.id, opening.org_id, opening.account_id, opening.patient_id, opening.reason, opening.started,
        opening.ends, None,
    )  # fmt: skip
    await _audit(conn, actor, opening, "break-glass-start")
    await _tell(conn, opening, outbox)
    return opening


async def close_record(conn: Conn, actor: Actor, opening_id: str, now: int) -> Opening | None:
    """End an opening early (only its own clinician can); records the end."""
    opening = await get_opening(conn, opening_id)
    if opening is None or opening.account_id != actor.account_id or opening.closed is not None:
        return None
    ended = min(now, opening.ends)
    await conn.execute(
        "UPDATE break_glass SET closed = $1 WHERE id = $2 AND closed IS NULL", ended, opening_id
    )
    closed = Opening(**{**opening.__dict__, "closed": ended})
    await _audit(conn, actor, closed, "break-glass-end")
    return closed


async def close_expired(conn: Conn, now: int) -> int:
    """Record the end of every opening whose time is up (run periodically); returns how many."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM break_glass WHERE closed IS NULL AND ends <= $1", now)
    for row in rows:
        opening = Opening(*row)
        await conn.execute(
            "UPDATE break_glass SET closed = ends WHERE id = $1 AND closed IS NULL", opening.id
        )
        actor = Actor(ActorKind.PRACTITIONER, opening.org_id, account_id=opening.account_id)
        await _audit(conn, actor, Opening(**{**opening.__dict__, "closed": opening.ends}), "break-glass-end")
    return len(rows)


async def close_expired_periodically(db: Database, every: float = 30.0) -> None:
    """Record the ends of expired openings every ``every`` seconds (the access itself already ended
    on time: the grant query compares with the clock)."""
    while True:
        await asyncio.sleep(every)
        try:
            async with db.transaction() as conn:
                await close_expired(conn, clock.now_us())
        except Exception:  # the next round tries again; a closed database ends the task on shutdown
            log.exception("recording the end of expired emergency access failed")


async def get_opening(conn: Conn, opening_id: str) -> Opening | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM break_glass WHERE id = $1", opening_id)
    return Opening(*row) if row is not None else None


async def openings_of(conn: Conn, account_id: str, limit: int = 20) -> list[Opening]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM break_glass WHERE account_id = $1 ORDER BY started DESC LIMIT $2",
        account_id,
        limit,
    )
    return [Opening(*r) for r in rows]


async def _audit(conn: Conn, actor: Actor, opening: Opening, what: str) -> None:
    # Appended in the caller's transaction: the opening and its record commit or vanish together.
    request = AuditRequest(
        interaction="operation", res_type="Patient", res_id=opening.patient_id, operation=what
    )
    action = Action.EXECUTE
    await append(
        conn, entries_for(actor, request, Outcome.SUCCESS, patient_ids=[opening.patient_id], action=action)
    )


async def _tell(conn: Conn, opening: Opening, outbox: Outbox) -> None:
    """The patient (their accounts) and the organization's privacy officers get an e-mail."""
    rows = await conn.fetch(
        "SELECT email, roles, patient_id FROM account WHERE org_id = $1 AND NOT disabled "
        "AND (patient_id = $2 OR roles LIKE $3)",
        opening.org_id, opening.patient_id, f"%{Role.PRIVACY_OFFICER.value}%",
    )  # fmt: skip
    for email, roles, patient_id in rows:
        if patient_id == opening.patient_id:
            outbox.add(Mail(email, "Your Housecall record was opened in an emergency",
                            "A clinician opened your health record in an emergency. Sign in to Housecall and "
                            "look at \"Who looked at my record\" to see who, when and why.\n"))  # fmt: skip
        if Role.PRIVACY_OFFICER.value in roles.split():
            outbox.add(Mail(email, "Emergency access to a record in Housecall",
                            "A clinician used emergency access to a patient's record. The reason they gave "
                            f"and the times are in the audit trail (opening {opening.id}).\n"))  # fmt: skip
