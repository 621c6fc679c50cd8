"""Authorization codes, access and refresh tokens, and the bearer check of every API request.

Tokens are opaque random strings (256 bits) stored as SHA-256 hashes (decision 0008): checking one
is a single primary-key probe joined to its grant, and revoking a grant or a token is effective on
the very next request, in every process. Nothing here logs or stores a token whole; the audit
trail names a token by its ``token_id``.

Grant families: every token issued from one authorization (one code, or one client-credentials
request) belongs to one ``oauth_grant``. A replayed code, a reused refresh token, or the patient's
revocation kills the whole family (RFC 9700 2.2.2, 4.14).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from housecall.access.actor import Actor, ActorKind, Role
from housecall.core.db import Conn
from housecall.fhir.errors import FhirError

log = logging.getLogger(__name__)
ACCESS_TTL = 3600  # seconds; SMART apps refresh or relaunch after an hour
REFRESH_TTL = 90 * 24 * 3600  # an offline_access grant lives 90 days without use, then re-consent
CODE_TTL = 600  # the ceiling (ONC (g)(10)): an authorization code lives at most 10 minutes
_US = 1_000_000
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 4.1


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 5.2): ``error`` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidToken(FhirError):
    """401 for a bearer token that is malformed, unknown, expired or revoked (RFC 6750 3.1).

    A ``FhirError``, so the FHIR API renders it as an OperationOutcome with its header."""

    def __init__(self, diagnostics: str = "the access token is not valid") -> None:
        super().__init__(
            401, "login", diagnostics, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )


def insufficient_scope(needed: str) -> FhirError:
    """403 for a valid token whose scopes do not cover the request (RFC 6750 3.1).

    Only for requests that disclose nothing by failing (a write, a type-level search); a read of
    a resource the actor may not see is a 404, like a missing one."""
    return FhirError(
        403, "forbidden", f"the token's scopes do not allow this ({needed})",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
    )  # fmt: skip


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def now_us_clock() -> int:
    """The current time in microseconds, for callers without a request (CLI, jobs)."""
    return int(time.time() * _US)


def now_us(request: Request) -> int:
    """The current time, from the app's clock (tests move it to age codes and tokens)."""
    clock = getattr(request.app.state, "smart_clock", None) or time.time
    return int(clock() * _US)


@dataclass(frozen=True)
class Grant:
    grant_id: str
    client_id: str
    org_id: str
    account_id: str | None
    actor_kind: str
    roles: tuple[str, ...]
    fhir_user: str | None
    patient_id: str | None
    scopes: tuple[str, ...]
    aud: str
    revoked_at: int | None = None


_GRANT_COLUMNS = "grant_id, client_id, org_id, account_id, actor_kind, roles, fhir_user, patient_id, scopes, aud, revoked_at"


def _grant(row: Any) -> Grant:
    return Grant(
        grant_id=row[0], client_id=row[1], org_id=row[2], account_id=row[3], actor_kind=row[4],
        roles=tuple(row[5].split()), fhir_user=row[6], patient_id=row[7], scopes=tuple(row[8].split()),
        aud=row[9], revoked_at=row[10],
    )  # fmt: skip


async def create_grant(conn: Conn, grant: Grant, now: int) -> None:
    await conn.execute(
        f"INSERT INTO oauth_grant ({_GRANT_COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        grant.grant_id, grant.client_id, grant.org_id, grant.account_id, grant.actor_kind, " ".join(grant.roles),
        grant.fhir_user, grant.patient_id, " ".join(grant.scopes), grant.aud, None, now,
    )  # fmt: skip


def new_id() -> str:
    return secrets.token_hex(16)


async def get_grant(conn: Conn, grant_id: str) -> Grant | None:
    row = await conn.fetchrow(f"SELECT {_GRANT_COLUMNS} FROM oauth_grant WHERE grant_id = $1", grant_id)
    return _grant(row) if row is not None else None


async def revoke_grant(conn: Conn, grant_id: str, now: int) -> None:
    """Every token of the grant stops working on its next use."""
    await conn.execute(
        "UPDATE oauth_grant SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL", now, grant_id
    )
    forget_live_tokens()


async def revoke_account_grants(conn: Conn, account_id: str, now: int) -> None:
    """For identity: an account disabled or signed out everywhere loses its apps' tokens too."""
    await conn.execute(
        "UPDATE oauth_grant SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL", now, account_id
    )
    forget_live_tokens()


async def _holder_still_allowed(conn: Conn, grant: Grant, now: int) -> bool:
    """The account behind a grant is enabled and, for a proxy, the patient's permission is active."""
    if grant.account_id is None:
        return True
    disabled = await conn.fetchval("SELECT disabled FROM account WHERE id = $1", grant.account_id)
    if disabled:
        return False
    if grant.actor_kind != "proxy":
        return True
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM proxy_grant WHERE proxy_account_id = $1 AND patient_id = $2 AND revoked IS NULL "
            "AND since <= $3 AND (until IS NULL OR until > $3)",
            grant.account_id,
            grant.patient_id,
            now,
        )
    )


# -- authorization codes -------------------------------------------------------------------------


async def create_code(
    conn: Conn, *, grant_id: str, client_id: str, redirect_uri: str, challenge: str, nonce: str | None,
    now: int, ttl: int = CODE_TTL,
) -> str:  # fmt: skip
    code = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO oauth_code (code_hash, grant_id, client_id, redirect_uri, code_challenge, nonce, expires_at, "
        "used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        token_hash(code), grant_id, client_id, redirect_uri, challenge, nonce, now + min(ttl, CODE_TTL) * _US, None,
    )  # fmt: skip
    return code


async def redeem_code(
    conn: Conn, *, code: str, client_id: str, redirect_uri: str | None, verifier: str | None, now: int
) -> tuple[Grant, str | None]:
    """The grant a code stands for, and the OpenID nonce; the code is spent whatever the outcome.

    A second use of a code revokes everything issued from it (RFC 6749 4.1.2). Run it in a
    transaction that commits even when this raises ``OAuthError`` (the spending must stick).
    """
    row = await conn.fetchrow(
        "SELECT grant_id, client_id, redirect_uri, code_challenge, nonce, expires_at, used_at "
        "FROM oauth_code WHERE code_hash = $1",
        token_hash(code),
    )
    if row is None:
        raise OAuthError("invalid_grant", "unknown authorization code")
    grant_id, code_client, code_redirect, challenge, nonce, expires_at, used_at = row
    if used_at is not None:
        await revoke_grant(conn, grant_id, now)
        raise OAuthError("invalid_grant", "the authorization code was already used; its tokens are revoked")
    # Conditional, after a read (so inside a real transaction on PostgreSQL, where the row count is
    # known): of two concurrent redemptions one updates the row and the other sees a replay.
    spent = await conn.execute(
        "UPDATE oauth_code SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL", now, token_hash(code)
    )
    if spent != 1:
        await revoke_grant(conn, grant_id, now)
        raise OAuthError("invalid_grant", "the authorization code was already used; its tokens are revoked")
    if code_client != client_id:
        raise OAuthError("invalid_grant", "the code was issued to another client")
    if expires_at <= now:
        raise OAuthError("invalid_grant", "the authorization code has expired")
    if redirect_uri != code_redirect:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
    # PKCE (RFC 7636 4.6): a missing, blank, malformed or wrong verifier fails alike.
    if not verifier or not _VERIFIER.match(verifier) or not secrets.compare_digest(s256(verifier), challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    grant = await get_grant(conn, grant_id)
    if grant is None or grant.revoked_at is not None or not await _holder_still_allowed(conn, grant, now):
        raise OAuthError("invalid_grant", "the authorization was revoked")
    return grant, nonce


# -- tokens --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    access_token: str
    token_id: str
    expires_in: int
    scopes: tuple[str, ...]
    refresh_token: str | None = None


async def _insert_token(
    conn: Conn, grant_id: str, kind: str, scopes: tuple[str, ...], now: int, ttl: int
) -> tuple[str, str]:
    value = ("hca_" if kind == "access" else "hcr_") + secrets.token_urlsafe(32)
    token_id = new_id()
    await conn.execute(
        "INSERT INTO oauth_token (token_hash, token_id, grant_id, token_type, scopes, issued_at, expires_at, "
        "used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        token_hash(value), token_id, grant_id, kind, " ".join(scopes), now, now + ttl * _US, None, None,
    )  # fmt: skip
    return value, token_id


async def issue_tokens(conn: Conn, grant: Grant, scopes: tuple[str, ...], now: int) -> Issued:
    """An access token for ``scopes`` (a subset of the grant's), and a refresh token when the
    grant includes ``offline_access``."""
    access, token_id = await _insert_token(conn, grant.grant_id, "access", scopes, now, ACCESS_TTL)
    refresh = None
    if "offline_access" in grant.scopes and grant.account_id is not None:
        refresh, _ = await _insert_token(conn, grant.grant_id, "refresh", scopes, now, REFRESH_TTL)
    return Issued(access, token_id, ACCESS_TTL, scopes, refresh)


async def rotate_refresh(
    conn: Conn, *, refresh_token: str, client_id: str, scopes: list[str] | None, now: int
) -> tuple[Grant, Issued]:
    """A new access and refresh token for a refresh token, which is spent (rotation).

    Presenting a spent refresh token again means two parties hold it: the whole grant is revoked
    (reuse detection, RFC 9700 4.14.2). Commit even when this raises."""
    row = await conn.fetchrow(
        "SELECT grant_id, scopes, expires_at, used_at, revoked_at FROM oauth_token "
        "WHERE token_hash = $1 AND token_type = $2",
        token_hash(refresh_token), "refresh",
    )  # fmt: skip
    if row is None:
        raise OAuthError("invalid_grant", "unknown refresh token")
    grant_id, token_scopes, expires_at, used_at, revoked_at = row
    grant = await get_grant(conn, grant_id)
    if grant is None or grant.client_id != client_id:
        raise OAuthError("invalid_grant", "the refresh token was issued to another client")
    if used_at is not None or revoked_at is not None:
        await revoke_grant(conn, grant_id, now)
        raise OAuthError("invalid_grant", "the refresh token was already used; the authorization is revoked")
    if grant.revoked_at is not None or not await _holder_still_allowed(conn, grant, now):
        raise OAuthError("invalid_grant", "the authorization was revoked")
    if expires_at <= now:
        raise OAuthError("invalid_grant", "the refresh token has expired")
    have = tuple(token_scopes.split())
    if scopes is not None:
        extra = [s for s in scopes if s not in have]
        if extra:
            raise OAuthError("invalid_scope", f"more than was granted: {' '.join(extra)}")
        have = tuple(scopes)
    spent = await conn.execute(
        "UPDATE oauth_token SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        now,
        token_hash(refresh_token),
    )
    if spent != 1:  # a concurrent use of the same refresh token: reuse
        await revoke_grant(conn, grant_id, now)
        raise OAuthError("invalid_grant", "the refresh token was already used; the authorization is revoked")
    return grant, await issue_tokens(conn, grant, have, now)


async def revoke_token(conn: Conn, token: str, client_id: str | None, now: int) -> None:
    """RFC 7009: revoking a refresh token ends its grant; an access token ends alone. Unknown
    tokens and other clients' tokens are ignored (the answer is 200 either way)."""
    row = await conn.fetchrow(
        "SELECT t.token_type, t.grant_id, g.client_id FROM oauth_token t JOIN oauth_grant g "
        "ON g.grant_id = t.grant_id WHERE t.token_hash = $1",
        token_hash(token),
    )
    if row is None or (client_id is not None and row[2] != client_id):
        return
    if row[0] == "refresh":
        await revoke_grant(conn, row[1], now)
    else:
        await conn.execute(
            "UPDATE oauth_token SET revoked_at = $1 WHERE token_hash = $2", now, token_hash(token)
        )
        forget_live_tokens()


_LOOKUP = (
    "SELECT t.token_type, t.token_id, t.scopes, t.issued_at, t.expires_at, t.used_at, t.revoked_at, g.revoked_at, "
    "g.client_id, g.org_id, g.account_id, g.actor_kind, g.roles, g.fhir_user, g.patient_id "
    "FROM oauth_token t JOIN oauth_grant g ON g.grant_id = t.grant_id WHERE t.token_hash = $1"
)


async def introspect(
    conn: Conn, token: str, now: int, *, client_id: str, org_id: str | None
) -> dict[str, Any]:
    """RFC 7662 answer for a token, told only to its own client or a client of its organization."""
    row = await conn.fetchrow(_LOOKUP, token_hash(token))
    if row is None:
        return {"active": False}
    kind, token_id, scopes, issued, expires, used, revoked, grant_revoked = row[:8]
    tok_client, tok_org, account_id, _, _, fhir_user, patient_id = row[8:]
    if tok_client != client_id and (org_id is None or tok_org != org_id):
        return {"active": False}
    if revoked is not None or grant_revoked is not None or used is not None or expires <= now:
        return {"active": False}
    out: dict[str, Any] = {
        "active": True, "scope": scopes, "client_id": tok_client, "token_type": "Bearer" if kind == "access" else "refresh_token",
        "exp": expires // _US, "iat": issued // _US, "sub": account_id or tok_client, "jti": token_id,
    }  # fmt: skip
    if patient_id:
        out["patient"] = patient_id
    if fhir_user:
        out["fhirUser"] = fhir_user
    return out


PURGE_AFTER = 24 * 3600  # seconds past expiry before a code or token row is deleted


async def purge_expired(conn: Conn, now: int) -> None:
    """Delete codes and tokens a day past their expiry. A rotated refresh token is kept until its
    own expiry, so that its reuse is still recognised (and revokes the family) until then."""
    cutoff = now - PURGE_AFTER * _US
    await conn.execute("DELETE FROM oauth_code WHERE expires_at < $1", cutoff)
    await conn.execute("DELETE FROM oauth_token WHERE expires_at < $1", cutoff)
    await conn.execute("DELETE FROM oauth_jti WHERE expires_at < $1", now)


# The bearer check: the token, its grant, and - in the same round trip - whether the account is
# still enabled and, for a proxy, whether the patient's permission (identity's proxy_grant) is still
# active, so that disabling an account or revoking a proxy ends its apps' access on the next request.
_ACTOR_LOOKUP = (
    "SELECT t.token_type, t.token_id, t.scopes, t.expires_at, t.revoked_at, g.revoked_at, g.client_id, "
    "g.org_id, g.account_id, g.actor_kind, g.roles, g.fhir_user, g.patient_id, a.disabled, "
    "CASE WHEN g.actor_kind = 'proxy' THEN EXISTS (SELECT 1 FROM proxy_grant p WHERE "
    "p.proxy_account_id = g.account_id AND p.patient_id = g.patient_id AND p.revoked IS NULL "
    "AND p.since <= $2 AND (p.until IS NULL OR p.until > $2)) ELSE TRUE END "
    "FROM oauth_token t JOIN oauth_grant g ON g.grant_id = t.grant_id "
    "LEFT JOIN account a ON a.id = g.account_id WHERE t.token_hash = $1"
)


async def lookup_actor(conn: Conn, token: str, now: int) -> Actor | None:
    """The actor an access token stands for; None when it is unknown, expired or revoked, its
    account is disabled, or the proxy permission it was issued under has ended."""
    found = await _lookup(conn, token, now)
    return found[0] if found is not None else None


async def _lookup(conn: Conn, token: str, now: int) -> tuple[Actor, int] | None:
    """(actor, expiry in µs) of a live access token."""
    if not token.startswith("hca_") or len(token) > 100:
        return None  # not one of ours (a JWT, a refresh token): no database round trip
    row = await conn.fetchrow(_ACTOR_LOOKUP, token_hash(token), now)
    if row is None:
        return None
    kind, token_id, scopes, expires, revoked, grant_revoked, client_id, org_id = row[:8]
    account_id, actor_kind, roles, fhir_user, patient_id, disabled, proxy_ok = row[8:]
    if kind != "access" or revoked is not None or grant_revoked is not None or expires <= now:
        return None
    if disabled or not proxy_ok:
        return None
    actor = Actor(
        kind=ActorKind(actor_kind), org_id=org_id, account_id=account_id,
        roles=frozenset(Role(r) for r in roles.split() if r in Role.__members__.values()),
        fhir_user=fhir_user, patient_id=patient_id, client_id=client_id, scopes=frozenset(scopes.split()),
        session_id=token_id,
    )  # fmt: skip
    return actor, int(expires)


async def actor_for_token(request: Request, conn: Conn | None = None) -> Actor | None:
    """The actor of the request's ``Authorization: Bearer`` token; None when there is no
    Authorization header. Raises ``InvalidToken`` (401, ``WWW-Authenticate: Bearer
    error="invalid_token"``) for anything else that is not a live access token of this server.

    Cost: one indexed primary-key lookup (pass the request's ``conn`` to avoid taking a second
    connection), or none when the process's ``LiveTokens`` (PostgreSQL) already knows the token.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise InvalidToken("use Authorization: Bearer <access token>")
    now = now_us(request)
    live: LiveTokens | None = getattr(request.app.state, "live_tokens", None)
    if live is not None and (actor := live.get(value, now)) is not None:
        return actor
    generation = live.generation if live is not None else 0
    if conn is not None:
        found = await _lookup(conn, value, now)
    else:
        async with request.app.state.db.reader() as own:
            found = await _lookup(own, value, now)
    if found is None:
        raise InvalidToken()
    if live is not None:
        live.put(value, *found, generation, now)
    return found[0]


class LiveTokens:
    """This process's memory of the access tokens it has checked (PostgreSQL only), so that a
    request need not look its token up again: the lookup cost as much as a read by id.

    Revocation stays effective on the next request (decision 0027). Triggers on the tables the
    lookup reads (``oauth_token``, ``oauth_grant``, ``account``, ``proxy_grant``) send a
    notification on every change, in the committing transaction; each process listens on its own
    connection and forgets everything it knows when one arrives. The revoking functions here also
    forget at once, so this process never waits for its own notification. A lookup that started
    before a change is not remembered after it (``generation``). While the listening connection is
    down nothing is remembered, entries expire with their token or after ``MAX_AGE``, and proxies'
    tokens (whose permission can end by date) are not remembered at all.
    """

    CHANNEL = "housecall_auth"
    MAX_AGE = 30 * _US
    MAX_ENTRIES = 10_000
    CHECK_EVERY = 10.0  # seconds between checks that the listening connection still answers

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.generation = 0
        self.listening = False
        self._actors: dict[str, tuple[Actor, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def get(self, token: str, now: int) -> Actor | None:
        entry = self._actors.get(token) if self.listening else None
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def put(self, token: str, actor: Actor, expires: int, generation: int, now: int) -> None:
        if not self.listening or generation != self.generation or actor.kind is ActorKind.PROXY:
            return
        if len(self._actors) >= self.MAX_ENTRIES:
            self._actors.clear()
        self._actors[token] = (actor, min(expires, now + self.MAX_AGE))

    def forget(self) -> None:
        self._actors.clear()
        self.generation += 1

    async def start(self, wait: float = 5.0) -> None:
        """Start listening; wait (a while) until the first LISTEN is in place."""
        self._task = asyncio.get_running_loop().create_task(self._listen_forever())
        try:
            await asyncio.wait_for(self._listening.wait(), wait)
        except TimeoutError:
            log.warning("not yet listening for token revocations; checking every token meanwhile")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.listening = False
        self.forget()

    async def _listen_forever(self) -> None:
        import asyncpg

        delay = 0.5
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.CHANNEL, lambda *_: self.forget())
                self.forget()  # whatever changed while nobody listened
                self.listening = True
                self._listening.set()
                delay = 0.5
                while not lost.is_set():
                    # A closed connection is noticed at once; a silent one by the periodic check.
                    try:
                        await asyncio.wait_for(lost.wait(), self.CHECK_EVERY)
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=self.CHECK_EVERY)
                raise ConnectionError("the listening connection was closed")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "listening for token revocations failed; checking every token meanwhile", exc_info=True
                )
            finally:
                self.listening = False
                self._listening.clear()
                self.forget()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


_PROCESS_TOKENS: list[LiveTokens] = []


def forget_live_tokens() -> None:
    """Called by whatever revokes a token, a grant, an account or a proxy permission, inside its
    transaction: this process stops trusting what it remembers at once (other processes when
    the change commits)."""
    for live in _PROCESS_TOKENS:
        live.forget()


async def watch_tokens(db: Any) -> LiveTokens | None:
    """The process's ``LiveTokens`` for ``db`` (started), or None on SQLite: nothing there tells
    the server that another process (``housecall user disable``) changed a token's standing."""
    if getattr(db, "dialect", None) != "postgresql":
        return None
    live = LiveTokens(db.dsn)
    await live.start()
    _PROCESS_TOKENS.append(live)
    return live


async def unwatch_tokens(live: LiveTokens | None) -> None:
    if live is not None:
        await live.close()
        _PROCESS_TOKENS.remove(live)
