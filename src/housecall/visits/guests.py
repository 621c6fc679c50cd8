"""Guest links: how a third party without an account (an interpreter, a family member, another
clinician) reaches one visit. The link carries a random token; only its hash is stored, bound to
the organization and the visit, and it stops working after ``LIFETIME_US``.

The link is single-use in the sense that matters (decision 0021): the first browser that opens it
**binds** it — it gets a per-guest secret in the ``__Host-hc_guest`` cookie and the row keeps the
secret's hash — and from then on only that browser is the guest. Opening the link again from the
same browser continues; a forwarded link opened anywhere else is refused. The signaling socket
knows a guest by the cookie only, never by the link's token. A guest still waits until a clinician
admits them, like everyone else, and reads nothing of the patient's record.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from housecall.core.db import Conn
from housecall.identity.clock import clock

LIFETIME_US = 2 * 3600 * 1_000_000
COOKIE = "__Host-hc_guest"
LABELS = ("interpreter", "family", "clinician", "other")  # what the invite form offers
MAX_NAME = 100


@dataclass(frozen=True)
class Guest:
    org_id: str
    appointment_id: str
    label: str
    name: str | None = None

    @property
    def display(self) -> str:
        """How the clinician's lobby and the call name the guest: "Rosa Díaz (Interpreter)"."""
        return f"{self.name} ({self.label})" if self.name else self.label


def _hash(raw: str) -> str:
    return hashlib.sha256(("visit-guest:" + raw).encode()).hexdigest()


def _cookie_hash(raw: str) -> str:
    return hashlib.sha256(("visit-guest-browser:" + raw).encode()).hexdigest()


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


class LinkRefused(Exception):
    """The link cannot be opened here: ``code`` is ``unknown``, ``expired`` or ``taken`` (opened by
    another browser first)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def open_link(conn: Conn, raw: str, browser_secret: str | None) -> tuple[str, str | None]:
    """Open a guest link in a browser holding ``browser_secret`` (its guest cookie, if any).

    Returns (appointment id, a new secret to set as the cookie, or None when this browser holds the
    link already). The first opening binds the link in one conditional UPDATE, so two browsers
    racing for it cannot both win. Raises ``LinkRefused``."""
    if not raw or len(raw) > 100:
        raise LinkRefused("unknown")
    row = await conn.fetchrow(
        "SELECT appointment_id, expires, bound_hash FROM visit_guest WHERE token_hash = $1", _hash(raw)
    )
    if row is None:
        raise LinkRefused("unknown")
    if int(row[1]) <= clock.now_us():
        raise LinkRefused("expired")
    if row[2] is not None:
        if (
            browser_secret
            and len(browser_secret) <= 100
            and secrets.compare_digest(row[2], _cookie_hash(browser_secret))
        ):
            return str(row[0]), None
        raise LinkRefused("taken")
    secret = secrets.token_urlsafe(32)
    won = await conn.execute(
        "UPDATE visit_guest SET bound_hash = $1, bound = $2 WHERE token_hash = $3 AND bound_hash IS NULL",
        _cookie_hash(secret), clock.now_us(), _hash(raw),
    )  # fmt: skip
    if won != 1:
        raise LinkRefused("taken")
    return str(row[0]), secret


async def guest_of_browser(conn: Conn, secret: str | None, appointment_id: str) -> Guest | None:
    """The live guest this browser's cookie makes it for this visit, or None."""
    if not secret or len(secret) > 100:
        return None
    row = await conn.fetchrow(
        "SELECT org_id, appointment_id, label, expires, name FROM visit_guest WHERE bound_hash = $1",
        _cookie_hash(secret),
    )
    if row is None or int(row[3]) <= clock.now_us() or row[1] != appointment_id:
        return None
    return Guest(row[0], row[1], row[2], row[4])


async def set_name(conn: Conn, secret: str, name: str) -> None:
    """The name the guest typed (shown to the clinician beside the label)."""
    await conn.execute(
        "UPDATE visit_guest SET name = $1 WHERE bound_hash = $2", name[:MAX_NAME], _cookie_hash(secret)
    )


def browser_secret(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def set_cookie(response: Response, secret: str) -> None:
    # Dies with the browser; the row's expiry is the real limit. HttpOnly: no script reads it.
    response.set_cookie(COOKIE, secret, secure=True, httponly=True, samesite="lax", path="/")
