"""The OAuth client registry: which apps, devices and integrations may ask for tokens, and how.

Registered by operators (``housecall client create``). Redirect URIs are matched exactly, as
strings (RFC 9700 2.1: no prefix, no wildcard, no normalisation), and the CORS origins of an app
are derived from them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from joserfc.jwk import KeySet

from housecall.core.db import Conn
from housecall.smart import scopes as sc
from housecall.smart.tokens import forget_live_tokens

GRANTS = ("authorization_code", "client_credentials")
AUTH_METHODS = ("none", "client_secret_basic", "private_key_jwt")
_COLUMNS = (
    "client_id, org_id, name, grant_types, redirect_uris, scopes, auth_method, secret_hash, jwks, "
    "device_id, disabled, created_at"
)


class ClientError(ValueError):
    """A registration that cannot be made as asked (the CLI prints it)."""


@dataclass(frozen=True)
class Client:
    client_id: str
    org_id: str | None
    name: str
    grant_types: tuple[str, ...]
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    auth_method: str
    secret_hash: str | None
    jwks: dict[str, Any] | None
    device_id: str | None
    disabled: bool
    created_at: int

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    @property
    def is_backend(self) -> bool:
        return "client_credentials" in self.grant_types

    def check_secret(self, secret: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(self.secret_hash, hash_secret(secret))

    def key_set(self) -> KeySet | None:
        return KeySet.import_key_set(self.jwks) if self.jwks else None  # type: ignore[arg-type]


def hash_secret(value: str) -> str:
    """SHA-256 of a 256-bit random secret: a slow hash adds nothing when the input cannot be guessed,
    and the token endpoint stays fast (decision 0008)."""
    return hashlib.sha256(value.encode()).hexdigest()


def _row(row: Any) -> Client:
    return Client(
        client_id=row[0], org_id=row[1], name=row[2], grant_types=tuple(row[3].split()),
        redirect_uris=tuple(json.loads(row[4])), scopes=tuple(row[5].split()), auth_method=row[6],
        secret_hash=row[7], jwks=json.loads(row[8]) if row[8] else None, device_id=row[9],
        disabled=bool(row[10]), created_at=int(row[11]),
    )  # fmt: skip


def _check_redirect(uri: str) -> None:
    parts = urlsplit(uri)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.fragment or not parts.netloc or parts.scheme not in ("https", "http"):
        raise ClientError(f"redirect URI must be an absolute https URL without a fragment: {uri}")
    if parts.scheme == "http" and not loopback:
        raise ClientError(f"plain http redirect URIs are for loopback apps only: {uri}")


def _check_jwks(jwks: dict[str, Any]) -> None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ClientError("the JWKS must be a JSON object with a non-empty 'keys' list")
    for key in keys:
        if key.get("kty") not in ("RSA", "EC") or "d" in key:
            raise ClientError("the JWKS must hold public RSA or EC keys only (no private parts, no 'oct')")
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except Exception as exc:
        raise ClientError(f"the JWKS is not valid: {exc}") from exc


def new_client_id() -> str:
    """128 random bits in hex: safe as a command-line argument (never starts with "-"), in a URL and in
    HTTP Basic credentials (no ":")."""
    return secrets.token_hex(16)


async def create_client(
    conn: Conn,
    *,
    name: str,
    grant: str,
    scopes: list[str],
    now_us: int,
    redirect_uris: list[str] | None = None,
    jwks: dict[str, Any] | None = None,
    secret: bool = False,
    org_id: str | None = None,
    device_id: str | None = None,
) -> tuple[Client, str | None]:
    """Register a client; returns it and its secret (only when ``secret``; shown once, stored hashed).

    authorization_code clients are public (PKCE) unless given a secret or a JWKS;
    client_credentials clients must have a JWKS or a secret, an organization, and system/ scopes.
    """
    redirect_uris = redirect_uris or []
    if grant not in GRANTS:
        raise ClientError(f"grant must be one of {', '.join(GRANTS)}")
    if jwks is not None and secret:
        raise ClientError("choose --jwks or --secret, not both")
    unknown = [s for s in scopes if not sc.is_known(s)]
    if unknown or not scopes:
        raise ClientError(f"not SMART scopes: {' '.join(unknown) or '(none given)'}")
    levels = sc.levels(scopes)
    if grant == "authorization_code":
        if not redirect_uris:
            raise ClientError("an authorization_code client needs at least one --redirect-uri")
        if "system" in levels:
            raise ClientError("system/ scopes are for client_credentials (backend) clients only")
        if device_id:
            raise ClientError("a device client uses client_credentials")
    else:
        if redirect_uris:
            raise ClientError("client_credentials clients have no redirect URIs")
        if jwks is None and not secret:
            raise ClientError("a client_credentials client needs --jwks FILE or --secret")
        if org_id is None:
            raise ClientError("a client_credentials client acts in one organization: give --org")
        if levels - {"system"} or not levels:
            raise ClientError("client_credentials clients are granted system/ scopes only")
    for uri in redirect_uris:
        _check_redirect(uri)
    if jwks is not None:
        _check_jwks(jwks)
    method = "private_key_jwt" if jwks is not None else "client_secret_basic" if secret else "none"
    client_id = new_client_id()
    plain = secrets.token_urlsafe(32) if secret else None
    client = Client(
        client_id=client_id, org_id=org_id, name=name, grant_types=(grant,),
        redirect_uris=tuple(dict.fromkeys(redirect_uris)), scopes=tuple(sc.split(" ".join(scopes))),
        auth_method=method, secret_hash=hash_secret(plain) if plain else None, jwks=jwks,
        device_id=device_id, disabled=False, created_at=now_us,
    )  # fmt: skip
    await conn.execute(
        f"INSERT INTO oauth_client ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        client.client_id, client.org_id, client.name, " ".join(client.grant_types),
        json.dumps(list(client.redirect_uris)), " ".join(client.scopes), client.auth_method,
        client.secret_hash, json.dumps(jwks) if jwks is not None else None, client.device_id, False, now_us,
    )  # fmt: skip
    return client, plain


async def get_client(conn: Conn, client_id: str) -> Client | None:
    """The client, disabled or not (callers refuse disabled ones)."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM oauth_client WHERE client_id = $1", client_id)
    return _row(row) if row is not None else None


async def list_clients(conn: Conn) -> list[Client]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM oauth_client ORDER BY created_at, client_id")
    return [_row(r) for r in rows]


async def disable_client(conn: Conn, client_id: str) -> bool:
    """Disable the client and revoke every grant it holds; False when there is no such client."""
    if await get_client(conn, client_id) is None:
        return False
    await conn.execute("UPDATE oauth_client SET disabled = $1 WHERE client_id = $2", True, client_id)
    await conn.execute(
        "UPDATE oauth_grant SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
        _now_us(), client_id,
    )  # fmt: skip
    forget_live_tokens()
    return True


def _now_us() -> int:
    import time

    return int(time.time() * 1_000_000)


def origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}".lower()


async def registered_origins(conn: Conn) -> set[str]:
    """The browser origins of enabled apps' redirect URIs: the only origins CORS may allow."""
    rows = await conn.fetch("SELECT redirect_uris FROM oauth_client WHERE disabled = $1", False)
    return {origin_of(uri) for (uris,) in rows for uri in json.loads(uris)}
