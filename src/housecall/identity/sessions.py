"""Browser sessions: server-side rows behind the ``__Host-hc_session`` cookie, and the ``Actor``.

The cookie holds 256 random bits; the table holds only their SHA-256, so a copy of the database
cannot be replayed as cookies. A new id is issued whenever a session gains privilege (password
accepted, second factor accepted), so an id planted before sign-in is worthless (fixation).
Expiry (SECURITY.md row 9) is idle and absolute, by kind of account (settings ``staff_*`` and
``patient_*``); a session still waiting for its second factor or for MFA enrolment lives at most
15 minutes. Everything reads ``clock`` so tests can jump in time.

Call ``signed_in`` / ``actor_for_request`` *before* opening your own unit of work: they use the
database themselves (on SQLite a transaction inside another would wait for itself).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from housecall.access.actor import Actor, ActorKind
from housecall.core.db import Conn, Database
from housecall.core.settings import Settings
from housecall.identity import service, throttle
from housecall.identity.clock import clock
from housecall.identity.service import Account

SESSION_COOKIE = "__Host-hc_session"
PENDING_LIFETIME_US = 15 * 60 * 1_000_000
TOUCH_EVERY_US = 60 * 1_000_000  # last_seen is written at most once a minute per session
FULL, MFA, ENROL = "full", "mfa", "enrol"


@dataclass
class SessionState:
    id_hash: str
    raw: str
    account: Account
    stage: str
    created: int
    last_seen: int
    authenticated: int
    pending_totp: str | None
    acting_for: str | None

    @property
    def opaque_id(self) -> str:
        """What audit records name the session by: not the cookie, not the row key."""
        return service.sha256("audit:" + self.id_hash)[:32]


class SignInRequired(Exception):
    """Raised by page dependencies; the app answers with a 303 to ``location``."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def safe_next(value: str | None, default: str = "/") -> str:
    """Only a path on this site may follow sign-in (no open redirect to another host)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ch in value for ch in "\\\r\n\t") or any(ord(ch) < 0x20 for ch in value):
        return default
    return value


def signin_url(next_path: str | None) -> str:
    return "/signin?next=" + quote(safe_next(next_path), safe="/")


def request_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def limits(settings: Settings, account: Account) -> tuple[int, int]:
    """(idle, absolute) lifetime in microseconds for a full session of this account."""
    if account.requires_mfa:
        return settings.staff_idle_seconds * 1_000_000, settings.staff_absolute_seconds * 1_000_000
    return settings.patient_idle_seconds * 1_000_000, settings.patient_absolute_seconds * 1_000_000


# --------------------------------------------------------------------------------------------------
# Creating and ending sessions (inside the caller's unit of work)


async def start_session(conn: Conn, account: Account, stage: str, *, replaces: str | None = None) -> str:
    """A new session for ``account`` at ``stage``; returns the raw id to put in the cookie.

    ``replaces`` (an id hash) is deleted in the same unit of work: the privilege step gets a new id.
    """
    raw = secrets.token_urlsafe(32)
    now = clock.now_us()
    if replaces:
        await conn.execute("DELETE FROM auth_session WHERE id_hash = $1", replaces)
    await conn.execute(
        "INSERT INTO auth_session (id_hash, account_id, stage, created, last_seen, authenticated, "
        "pending_totp, acting_for) VALUES ($1, $2, $3, $4, $4, $4, NULL, NULL)",
        service.sha256(raw),
        account.id,
        stage,
        now,
    )
    return raw


async def promote(conn: Conn, state: SessionState, stage: str) -> str:
    """Move a session to ``stage`` under a new id, keeping its start time (absolute expiry counts
    from the first sign-in step); returns the new raw id."""
    raw = secrets.token_urlsafe(32)
    now = clock.now_us()
    await conn.execute("DELETE FROM auth_session WHERE id_hash = $1", state.id_hash)
    await conn.execute(
        "INSERT INTO auth_session (id_hash, account_id, stage, created, last_seen, authenticated, "
        "pending_totp, acting_for) VALUES ($1, $2, $3, $4, $5, $5, NULL, NULL)",
        service.sha256(raw),
        state.account.id,
        stage,
        now if state.stage != FULL else state.created,
        now,
    )
    return raw


async def end_session(conn: Conn, id_hash: str) -> None:
    await conn.execute("DELETE FROM auth_session WHERE id_hash = $1", id_hash)


def set_session_cookie(response: Response, raw: str) -> None:
    # No Max-Age: the cookie dies with the browser; the server enforces idle and absolute expiry.
    response.set_cookie(SESSION_COOKIE, raw, secure=True, httponly=True, samesite="lax", path="/")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="lax", path="/")


# --------------------------------------------------------------------------------------------------
# Reading the session of a request


async def load_session(request: Request) -> SessionState | None:
    """The request's live session at any stage (cached on the request), or None.

    Expired sessions are deleted when met. ``last_seen`` moves at most once a minute.
    """
    if hasattr(request.state, "hc_session"):
        return request.state.hc_session  # type: ignore[no-any-return]
    state = await _load(request)
    request.state.hc_session = state
    return state


async def _load(request: Request) -> SessionState | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 100:
        return None
    id_hash = service.sha256(raw)
    db = _db(request)
    async with db.reader() as conn:
        row = await conn.fetchrow(
            "SELECT stage, created, last_seen, authenticated, pending_totp, acting_for, account_id "
            "FROM auth_session WHERE id_hash = $1",
            id_hash,
        )
        account = await service.get_account(conn, row[6]) if row else None
    if row is None or account is None:
        return None
    now = clock.now_us()
    stage, created, last_seen = row[0], int(row[1]), int(row[2])
    if stage == FULL:
        idle, absolute = limits(_settings(request), account)
    else:
        idle = absolute = PENDING_LIFETIME_US
    if account.disabled or now - last_seen >= idle or now - created >= absolute:
        async with db.transaction() as conn:
            await end_session(conn, id_hash)
        return None
    if now - last_seen >= TOUCH_EVERY_US:
        async with db.transaction() as conn:
            await conn.execute("UPDATE auth_session SET last_seen = $1 WHERE id_hash = $2", now, id_hash)
        last_seen = now
    return SessionState(id_hash, raw, account, stage, created, last_seen, int(row[3]), row[4], row[5])


async def signed_in(request: Request) -> Account | None:
    """The account of a fully signed-in session (password and, where required, second factor),
    or None. A staff account that has not enrolled MFA yet is not signed in."""
    state = await load_session(request)
    return state.account if state is not None and state.stage == FULL else None


async def actor_for_request(request: Request) -> Actor | None:
    """The ``Actor`` of the request's page session, or None when not signed in.

    For a proxy, ``patient_id`` is the patient they switched to, and only while the patient's grant
    is active (a revoked grant stops at the next request).
    """
    state = await load_session(request)
    if state is None or state.stage != FULL:
        return None
    account = state.account
    patient_id: str | None = None
    fhir_user = account.fhir_user
    if account.kind is ActorKind.PATIENT:
        patient_id = account.patient_id
    elif account.kind is ActorKind.PROXY and state.acting_for:
        async with _db(request).reader() as conn:
            grants = await service.proxy_grants(conn, account.id)
        grant = next((g for g in grants if g.patient_id == state.acting_for), None)
        if grant is not None:
            patient_id = grant.patient_id
            fhir_user = f"RelatedPerson/{grant.related_person_id}" if grant.related_person_id else None
    return Actor(
        kind=account.kind,
        org_id=account.org_id,
        account_id=account.id,
        roles=account.roles,
        fhir_user=fhir_user,
        patient_id=patient_id,
        session_id=state.opaque_id,
    )


async def require_signed_in(request: Request) -> SessionState:
    """Page dependency: a full session, or a 303 to sign-in (or to MFA enrolment / challenge when
    sign-in is half done)."""
    state = await load_session(request)
    if state is None:
        raise SignInRequired(signin_url(request_path(request)))
    if state.stage == ENROL:
        raise SignInRequired("/mfa/enrol")
    if state.stage == MFA:
        raise SignInRequired("/signin/mfa")
    return state


async def fresh_auth_age(request: Request) -> float | None:
    """Seconds since the signed-in person last proved their password (and TOTP), or None."""
    state = await load_session(request)
    if state is None or state.stage != FULL:
        return None
    return (clock.now_us() - state.authenticated) / 1_000_000


async def require_fresh_auth(request: Request, within_seconds: float) -> Actor:
    """For actions that need "re-authenticate now" (break-glass): the actor when the password was
    proved within ``within_seconds``; otherwise ``SignInRequired`` to ``/signin/confirm?next=…``
    (the current path), which asks again and comes back."""
    state = await require_signed_in(request)
    age = (clock.now_us() - state.authenticated) / 1_000_000
    if age > within_seconds:
        raise SignInRequired("/signin/confirm?next=" + quote(safe_next(request_path(request)), safe="/"))
    actor = await actor_for_request(request)
    assert actor is not None
    return actor


async def stamp_reauthenticated(conn: Conn, state: SessionState) -> None:
    await conn.execute(
        "UPDATE auth_session SET authenticated = $1, last_seen = $1 WHERE id_hash = $2",
        clock.now_us(),
        state.id_hash,
    )


async def switch_patient(conn: Conn, state: SessionState, patient_id: str | None) -> bool:
    """A proxy chooses whose record to act on; False when they hold no active grant for it."""
    if patient_id is not None:
        grants = await service.proxy_grants(conn, state.account.id)
        if not any(g.patient_id == patient_id for g in grants):
            return False
    await conn.execute(
        "UPDATE auth_session SET acting_for = $1 WHERE id_hash = $2", patient_id, state.id_hash
    )
    return True


# --------------------------------------------------------------------------------------------------
# Sign-in attempts (throttled)


@dataclass
class Attempt:
    account: Account | None = None
    retry_after: int | None = None


def client_address(request: Request) -> str:
    # The direct peer. Behind a reverse proxy every request would share its address; trusting
    # X-Forwarded-For needs the proxy's address configured, which is deployment work (TODO #3).
    return request.client.host if request.client else "unknown"


async def attempt(
    db: Database,
    settings: Settings,
    email: str,
    ip: str,
    check: Callable[[Database], Awaitable[Account | None]],
) -> Attempt:
    """Run one throttled sign-in check. ``check(db)`` returns the account or None, opening only
    short units of work itself (hash checks run outside them); it runs after a failure has been
    reserved for the e-mail and the address, and the reservation is given back when it succeeds.
    Over a limit: ``Attempt(retry_after=seconds)`` without running ``check`` at all."""
    keys = {
        throttle.account_key(service.normalize_email(email)): settings.signin_failures_per_account_hour,
        throttle.ip_key(ip): settings.signin_failures_per_ip_hour,
    }
    async with db.transaction() as conn:
        wait, reserved = await throttle.reserve(conn, keys, clock.now_us())
    if wait is not None:
        return Attempt(retry_after=wait)
    account = await check(db)
    if account is not None:
        async with db.transaction() as conn:
            await throttle.release(conn, reserved)
    return Attempt(account=account)


async def purge_expired(conn: Conn, settings: Settings) -> int:
    """Delete what can no longer be used: sessions past every lifetime, e-mailed links a day past
    expiry, failed attempts outside the throttling window. Idempotent; for the job runner (or an
    operator) to call now and then. Returns how many rows went."""
    now = clock.now_us()
    longest_idle = max(settings.staff_idle_seconds, settings.patient_idle_seconds) * 1_000_000
    longest = max(settings.staff_absolute_seconds, settings.patient_absolute_seconds) * 1_000_000
    rows = await conn.fetch(
        "DELETE FROM auth_session WHERE last_seen <= $1 OR created <= $2 OR (stage <> $3 AND created <= $4) "
        "RETURNING 1",
        now - longest_idle,
        now - longest,
        FULL,
        now - PENDING_LIFETIME_US,
    )
    tokens = await conn.fetch("DELETE FROM email_token WHERE expires <= $1 RETURNING 1", now - 86_400_000_000)
    failures = await conn.fetch(
        "DELETE FROM signin_failure WHERE at <= $1 RETURNING 1", now - throttle.WINDOW_US
    )
    return len(rows) + len(tokens) + len(failures)
