"""Join links: the patient's way into their own visit from an e-mail or a text message.

A join link (``/join/<token>``) is made for one account (the patient's, or a proxy's) and one visit,
lives ``LIFETIME_US`` (at least until the visit's booked end), works **once**, and only its hash is
stored. The message that carries it says nothing but "Your Housecall visit is ready to join"
(``notify.Kind.VISIT_JOIN``). Opening it:

- signed in as that account: the link is used up and the person continues in their own session;
- signed in as someone else: refused and left unused (it is not theirs to spend);
- not signed in: the link is used up and a **visit-only session** starts — the ``__Host-hc_visit``
  cookie, whose hash the row keeps — that opens this visit's page, its check-in, its phone fallback
  and its signaling socket, and nothing else (every other page still asks to sign in).

Links are sent by the job ``visit.join_links``: queued with a booking's reminders to run
``LEAD_MINUTES`` before the start, and on request by the care team ("Send join link").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from housecall import notify
from housecall.access.actor import Actor, ActorKind
from housecall.access.policy import Access
from housecall.core import jobs
from housecall.core.db import Conn, Database
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError
from housecall.identity import service as identity
from housecall.identity.clock import clock

US = 1_000_000
LIFETIME_US = 60 * 60 * US  # a link sent a quarter of an hour ahead still works through the visit
SESSION_US = 4 * 60 * 60 * US  # a visit-only session outlives any visit, not a day
LEAD_MINUTES = 15
COOKIE = "__Host-hc_visit"
SEND = "visit.join_links"
OVER = frozenset({"cancelled", "noshow", "entered-in-error", "fulfilled"})


def _hash(raw: str) -> str:
    return hashlib.sha256(("visit-join:" + raw).encode()).hexdigest()


def _session_hash(raw: str) -> str:
    return hashlib.sha256(("visit-session:" + raw).encode()).hexdigest()


async def make(conn: Conn, *, org_id: str, appointment_id: str, patient_id: str, account_id: str,
               not_before_end_us: int = 0) -> str:  # fmt: skip
    """A new join token for ``account_id`` to ``appointment_id``; returns the raw token."""
    raw = secrets.token_urlsafe(24)
    now = clock.now_us()
    await conn.execute(
        "INSERT INTO visit_join (token_hash, org_id, appointment_id, account_id, patient_id, created, expires) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        _hash(raw), org_id, appointment_id, account_id, patient_id, now, max(now + LIFETIME_US, not_before_end_us),
    )  # fmt: skip
    return raw


async def send_links(
    conn: Conn, org_id: str, appointment_id: str, patient_id: str, *, end_us: int = 0
) -> list[str]:
    """A fresh join link to everyone who reads the patient's portal (the patient, active proxies),
    each by the channels they chose; in the caller's unit of work. Returns the accounts told."""
    told = []
    for account_id, _email in await identity.accounts_for_patient(conn, org_id, patient_id):
        raw = await make(conn, org_id=org_id, appointment_id=appointment_id, patient_id=patient_id,
                         account_id=account_id, not_before_end_us=end_us)  # fmt: skip
        await notify.send(conn, org_id, account_id, notify.Kind.VISIT_JOIN, f"/join/{raw}")
        told.append(account_id)
    return told


async def enqueue(conn: Conn, org_id: str, appointment_id: str, start_us: int) -> str | None:
    """Queue the join links of a booked virtual visit for ``LEAD_MINUTES`` before its start (at
    once when that is past). Keyed by visit and start: a moved visit gets its own."""
    run_at = max(start_us - LEAD_MINUTES * 60 * US, clock.now_us())
    return await jobs.enqueue(conn, SEND, {"org": org_id, "appointment": appointment_id, "start": start_us},
                              run_at=run_at, key=f"join:{appointment_id}:{start_us}")  # fmt: skip


def _patient_of(appt: dict[str, Any]) -> str | None:
    for p in appt.get("participant") or []:
        ref = str((p.get("actor") or {}).get("reference") or "")
        if ref.startswith("Patient/"):
            return ref.split("/", 1)[1]
    return None


def instant_us(value: str | None) -> int:
    """A FHIR instant as µs since the epoch (0 when absent)."""
    if not value:
        return 0
    return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * US)


@jobs.handler(SEND)
async def send_job(job: jobs.JobContext, args: dict[str, Any]) -> None:
    """Send the join links if the visit is still on at that start time (a moved or cancelled visit
    gets nothing from its old job)."""
    org_id, appointment_id = str(args["org"]), str(args["appointment"])
    settings = job.settings
    async with job.db.transaction() as conn:
        ctx = ix.Ctx(conn, settings, settings.public_url.rstrip("/") + "/fhir", Access.system(org_id))
        try:
            out = await ix.read(ctx, "Appointment", appointment_id)
        except FhirError as exc:
            if exc.status in (404, 410):
                return
            raise
        assert out.stored is not None
        appt = out.stored.resource()
        patient = _patient_of(appt)
        if appt.get("status") in OVER or patient is None:
            return
        if "start" in args and instant_us(appt.get("start")) != int(args["start"]):
            return
        await send_links(conn, org_id, appointment_id, patient, end_us=instant_us(appt.get("end")))


# -- opening a link ---------------------------------------------------------------------------------


class JoinRefused(Exception):
    """``code``: ``unknown`` (no such link), ``used``, ``expired``, ``not-yours`` (signed in as
    someone else: the link stays unused)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Joined:
    appointment_id: str
    session_secret: str | None  # the visit-only session's cookie, when the person was not signed in


async def open_link(conn: Conn, raw: str, signed_in_account: str | None) -> Joined:
    """Use up the join link ``raw`` (see the module's text); raises ``JoinRefused``."""
    if not raw or len(raw) > 100:
        raise JoinRefused("unknown")
    row = await conn.fetchrow(
        "SELECT appointment_id, account_id, expires, used FROM visit_join WHERE token_hash = $1", _hash(raw)
    )
    if row is None:
        raise JoinRefused("unknown")
    now = clock.now_us()
    if row[3] is not None:
        raise JoinRefused("used")
    if int(row[2]) <= now:
        raise JoinRefused("expired")
    if signed_in_account is not None and signed_in_account != row[1]:
        raise JoinRefused("not-yours")
    secret = secrets.token_urlsafe(32) if signed_in_account is None else None
    won = await conn.execute(
        "UPDATE visit_join SET used = $1, session_hash = $2, session_expires = $3 "
        "WHERE token_hash = $4 AND used IS NULL",
        now, _session_hash(secret) if secret else None, now + SESSION_US if secret else None, _hash(raw),
    )  # fmt: skip
    if won != 1:
        raise JoinRefused("used")  # another click won the race
    return Joined(str(row[0]), secret)


async def visit_actor(db: Database, request: Request, appointment_id: str) -> Actor | None:
    """The person of the request's visit-only session, if it is for this visit and still live."""
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 100:
        return None
    async with db.reader() as conn:
        row = await conn.fetchrow(
            "SELECT org_id, appointment_id, account_id, patient_id, session_expires FROM visit_join "
            "WHERE session_hash = $1",
            _session_hash(raw),
        )
        if row is None or row[1] != appointment_id or int(row[4] or 0) <= clock.now_us():
            return None
        account = await identity.get_account(conn, row[2])
        if account is None or account.disabled or account.org_id != row[0]:
            return None
        fhir_user, patient_id = account.fhir_user, account.patient_id
        if account.kind is ActorKind.PROXY:
            grant = next(
                (g for g in await identity.proxy_grants(conn, account.id) if g.patient_id == row[3]), None
            )
            if grant is None:
                return None  # the grant was revoked since the link was sent
            patient_id = grant.patient_id
            fhir_user = f"RelatedPerson/{grant.related_person_id}" if grant.related_person_id else None
        elif account.kind is not ActorKind.PATIENT or patient_id != row[3]:
            return None
    return Actor(kind=account.kind, org_id=account.org_id, account_id=account.id, roles=account.roles,
                 fhir_user=fhir_user, patient_id=patient_id,
                 session_id=identity.sha256("audit:visit:" + _session_hash(raw))[:32])  # fmt: skip


def set_cookie(response: Response, secret: str) -> None:
    # Dies with the browser; the row's ``session_expires`` is the real limit.
    response.set_cookie(COOKIE, secret, secure=True, httponly=True, samesite="lax", path="/")
