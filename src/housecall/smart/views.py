"""The authorization server's routes: discovery, authorize (consent), token, revoke, introspect,
the JWKS, and the patient's "connected apps" page.

SMART App Launch v2: https://hl7.org/fhir/smart-app-launch/app-launch.html (authorization code
with PKCE), .../backend-services.html (client credentials with private_key_jwt),
.../conformance.html (``.well-known/smart-configuration``).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from fastapi import FastAPI
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from housecall.access.actor import ActorKind
from housecall.core.db import Database
from housecall.fhir.api import base_url
from housecall.identity.sessions import client_address
from housecall.smart import assertions, keys, tokens
from housecall.smart import scopes as sc
from housecall.smart.clients import Client, get_client, origin_of, registered_origins
from housecall.smart.signin import SignedInUser, current_user, proxy_choices, signin_url
from housecall.smart.throttle import Throttle
from housecall.web.csrf import CsrfFailed, csrf_guard
from housecall.web.i18n import _
from housecall.web.pages import render
from housecall.web.security import CSP

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CHALLENGE_LEN = 43  # base64url of a SHA-256 digest, unpadded (RFC 7636 4.2)
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")
_B64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
CAPABILITIES = [
    "launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "context-standalone-patient", "permission-patient", "permission-user", "permission-v2", "permission-v1",
    "permission-offline", "sso-openid-connect",
]  # fmt: skip
AUTH_METHODS = ["client_secret_basic", "private_key_jwt", "none"]


# -- URLs ----------------------------------------------------------------------------------------


def _root(request: Request) -> str:
    return base_url(request).removesuffix("/fhir")


def endpoints(request: Request) -> dict[str, str]:
    root = _root(request)
    return {
        "issuer": base_url(request),
        "authorization_endpoint": f"{root}/oauth/authorize",
        "token_endpoint": f"{root}/oauth/token",
        "revocation_endpoint": f"{root}/oauth/revoke",
        "introspection_endpoint": f"{root}/oauth/introspect",
        "jwks_uri": f"{root}/oauth/jwks",
        "management_endpoint": f"{root}/account/apps",
    }


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _keys(request: Request) -> keys.ServerKeys:
    cache = getattr(request.app.state, "smart_keys", None)
    if cache is None:
        cache = request.app.state.smart_keys = {}
    return await keys.server_keys(_db(request), cache)


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page in the site's layout (web/pages.py: CSRF field, signed-in header, no-store)."""
    return render(request, f"smart/{name}", status=status, **context)


# -- discovery -----------------------------------------------------------------------------------


def scopes_supported() -> list[str]:
    return [
        "openid", "fhirUser", "launch/patient", "offline_access", "patient/*.cruds", "patient/*.rs",
        "user/*.cruds", "user/*.rs", "system/*.cruds", "system/*.rs", "patient/*.read", "user/*.read",
    ]  # fmt: skip


async def smart_configuration(request: Request) -> Response:
    # Public: describes the authorization server, never data.
    doc = {
        **endpoints(request),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": list(assertions.ALGORITHMS),
        "scopes_supported": scopes_supported(),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }
    return JSONResponse(doc, headers={"Cache-Control": "max-age=300"})


async def openid_configuration(request: Request) -> Response:
    # Public: OpenID Connect discovery for the id_tokens' issuer (the FHIR base URL).
    ep = endpoints(request)
    doc = {
        **{k: ep[k] for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")},
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [keys.ID_TOKEN_ALG],
        "scopes_supported": ["openid", "fhirUser"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
    }
    return JSONResponse(doc, headers={"Cache-Control": "max-age=300"})


async def jwks(request: Request) -> Response:
    # Public: the public key that verifies id_tokens.
    return JSONResponse((await _keys(request)).jwks(), headers={"Cache-Control": "max-age=300"})


# -- authorize -----------------------------------------------------------------------------------


class _PageError(Exception):
    """An authorization request that cannot be sent back to the app (unknown client or redirect
    URI): shown as a page, never redirected (RFC 6749 4.1.2.1)."""


class _RedirectError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _redirect(redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    sep = "&" if urlsplit(redirect_uri).query else "?"
    return RedirectResponse(redirect_uri + sep + urlencode(params), status_code=303, headers=_NO_STORE)


_AUTH_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
                "code_challenge_method", "nonce", "launch")  # fmt: skip


async def _check_request(request: Request, p: dict[str, str]) -> tuple[Client, str]:
    """The client and redirect URI of an authorization request, or ``_PageError``; then every rule
    whose failure is reported to the app (``_RedirectError``)."""
    async with _db(request).reader() as conn:
        client = await get_client(conn, p.get("client_id", ""))
    if client is None or client.disabled or "authorization_code" not in client.grant_types:
        raise _PageError(_("This app is not registered with Housecall, or it has been disabled."))
    redirect_uri = p.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:  # exact string match, nothing normalised
        raise _PageError(_("The app asked to return to an address it has not registered."))
    if p.get("response_type") != "code":
        raise _RedirectError("unsupported_response_type", "response_type must be code")
    if not p.get("state"):
        raise _RedirectError("invalid_request", "state is required")
    if p.get("code_challenge_method") != "S256":
        raise _RedirectError("invalid_request", "PKCE with code_challenge_method=S256 is required")
    challenge = p.get("code_challenge", "")
    if len(challenge) != _CHALLENGE_LEN or not set(challenge) <= _B64URL:
        raise _RedirectError(
            "invalid_request", "code_challenge must be the S256 challenge of a code_verifier"
        )
    if p.get("aud", "").rstrip("/") != base_url(request):
        raise _RedirectError("invalid_request", "aud must be this server's FHIR base URL")
    if p.get("launch"):
        raise _RedirectError("invalid_request", "EHR launch is not supported; use a standalone launch")
    return client, redirect_uri


def _grantable(client: Client, user: SignedInUser, requested: list[str]) -> list[str]:
    """The requested scopes this client may have and this user may give."""
    out = []
    for s in requested:
        if not sc.within(s, client.scopes):
            continue
        parsed = sc.parse_scope(s)
        if parsed is None:
            if s == "launch/patient" and user.kind not in (ActorKind.PATIENT, ActorKind.PROXY):
                continue  # no patient picker for clinicians yet
            if sc.is_known(s):
                out.append(s)
            continue
        patient_side = user.kind in (ActorKind.PATIENT, ActorKind.PROXY)
        if (parsed.level == "patient" and patient_side) or (parsed.level == "user" and not patient_side):
            out.append(s)
    return out


def _params(source: Any) -> dict[str, str]:
    return {k: str(source[k]) for k in _AUTH_PARAMS if source.get(k) is not None}


async def _csrf_ok(request: Request) -> bool:
    """identity's CSRF check (a token bound to the session), and a same-origin check when the
    browser says where the form came from."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _root(request):
        return False
    try:
        await csrf_guard(request)
    except CsrfFailed:
        return False
    return True


async def authorize(request: Request) -> Response:
    # A page for a signed-in person (identity's session); anyone else is sent to sign in.
    if request.method == "POST":
        return await _authorize_decision(request)
    p = _params(request.query_params)
    try:
        client, _uri = await _check_request(request, p)
    except _PageError as exc:
        return _render(request, "error.html", 400, message=str(exc))
    except _RedirectError as exc:
        return _app_error(p, exc)
    user = await current_user(request)
    if user is None:
        return RedirectResponse(signin_url(request.url.path + "?" + request.url.query), status_code=303)
    granted = _grantable(client, user, sc.split(p.get("scope")))
    if not any(sc.parse_scope(s) for s in granted) and "openid" not in granted:
        return _app_error(p, _RedirectError("invalid_scope", "none of the requested scopes can be granted"))
    if client.org_id is not None and client.org_id != user.org_id:
        return _render(
            request, "error.html", 403, message=_("This app is not available to your organization.")
        )
    choices = []
    if user.kind is ActorKind.PROXY:
        async with _db(request).reader() as conn:
            choices = await proxy_choices(conn, user)
        if not choices:
            return _render(
                request, "error.html", 403, message=_("No patient has given you access to their record yet.")
            )
    page = _render(
        request, "consent.html", client=client, user=user, params=p, choices=choices,
        scopes=_described(granted),
    )  # fmt: skip
    # The consent form's answer is a redirect to the app: Chromium applies CSP form-action to
    # that redirect too, so this page allows the app's registered origin and nothing else.
    origin = origin_of(p["redirect_uri"])
    if _ORIGIN.match(origin):
        page.headers["Content-Security-Policy"] = CSP.replace(
            "form-action 'self'", f"form-action 'self' {origin}"
        )
    return page


def _described(scopes: list[str]) -> list[tuple[str, str]]:
    """(scope, plain words) for a page, once per wording (openid, fhirUser and profile say the same)."""
    out: dict[str, str] = {}
    for scope in scopes:
        out.setdefault(sc.describe(scope), scope)
    return [(scope, words) for words, scope in out.items()]


def _app_error(p: dict[str, str], exc: _RedirectError) -> Response:
    out = {"error": exc.error, "error_description": exc.description}
    if p.get("state"):
        out["state"] = p["state"]
    return _redirect(p["redirect_uri"], out)


async def _authorize_decision(request: Request) -> Response:
    form = await request.form()
    if not await _csrf_ok(request):  # first: a forged request learns nothing, not even the client's state
        return _render(
            request, "error.html", 403, message=_("This form has expired. Start again from the app.")
        )
    p = _params(form)
    try:
        client, redirect_uri = await _check_request(request, p)
    except _PageError as exc:
        return _render(request, "error.html", 400, message=str(exc))
    except _RedirectError as exc:
        return _app_error(p, exc)
    user = await current_user(request)
    if user is None:
        return _render(
            request, "error.html", 401, message=_("Your session has ended. Start again from the app.")
        )
    if form.get("decision") != "approve":
        return _app_error(p, _RedirectError("access_denied", "the user declined"))
    if client.org_id is not None and client.org_id != user.org_id:
        return _render(
            request, "error.html", 403, message=_("This app is not available to your organization.")
        )
    granted = _grantable(client, user, sc.split(p.get("scope")))
    if not any(sc.parse_scope(s) for s in granted) and "openid" not in granted:
        return _app_error(p, _RedirectError("invalid_scope", "none of the requested scopes can be granted"))
    patient_id, fhir_user = user.patient_id, user.fhir_user
    now = tokens.now_us(request)
    async with _db(request).transaction() as conn:
        if user.kind is ActorKind.PROXY:
            # The patient comes from the proxy's own grants, never from the form alone.
            chosen = {c.patient_id: c for c in await proxy_choices(conn, user)}.get(
                str(form.get("patient", ""))
            )
            if chosen is None:
                return _render(request, "error.html", 403, message=_("Choose one of the patients listed."))
            patient_id = chosen.patient_id
            fhir_user = f"RelatedPerson/{chosen.related_person_id}" if chosen.related_person_id else None
        elif user.kind is not ActorKind.PATIENT:
            patient_id = None  # clinicians' standalone launch has no patient context yet
        if any((s := sc.parse_scope(x)) and s.level == "patient" for x in granted) and not patient_id:
            return _app_error(p, _RedirectError("invalid_scope", "patient scopes need a patient in context"))
        grant = tokens.Grant(
            grant_id=tokens.new_id(), client_id=client.client_id, org_id=user.org_id, account_id=user.account_id,
            actor_kind=user.kind.value, roles=user.roles, fhir_user=fhir_user, patient_id=patient_id,
            scopes=tuple(granted), aud=base_url(request),
        )  # fmt: skip
        await tokens.create_grant(conn, grant, now)
        code = await tokens.create_code(
            conn, grant_id=grant.grant_id, client_id=client.client_id, redirect_uri=redirect_uri,
            challenge=p["code_challenge"], nonce=p.get("nonce"), now=now,
        )  # fmt: skip
    return _redirect(redirect_uri, {"code": code, "state": p["state"]})


# -- token ---------------------------------------------------------------------------------------


def _oauth_error(exc: tokens.OAuthError, basic: bool = False) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="housecall"' if basic else "Bearer"
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
    return (unquote(user), unquote(password)) if sep else ("", "")


async def authenticate_client(request: Request, form: FormData, *, require_confidential: bool) -> Client:
    """The client a token-endpoint request authenticates as (RFC 6749 2.3, RFC 7523 2.2)."""
    invalid = tokens.OAuthError("invalid_client", "client authentication failed", 401)
    basic = _basic(request)
    assertion = form.get("client_assertion")
    form_id = str(form.get("client_id", "")) or None
    if basic is not None and assertion is not None:
        raise tokens.OAuthError("invalid_request", "use one client authentication method")
    if basic is not None:
        async with _db(request).reader() as conn:
            client = await get_client(conn, basic[0])
        if client is None or client.auth_method != "client_secret_basic" or not client.check_secret(basic[1]):
            raise invalid
    elif assertion is not None:
        if form.get("client_assertion_type") != assertions.ASSERTION_TYPE:
            raise tokens.OAuthError("invalid_request", "unsupported client_assertion_type")
        issuer = assertions.unverified_issuer(str(assertion)) or ""
        async with _db(request).reader() as conn:
            client = await get_client(conn, form_id or issuer)
        key_set = client.key_set() if client is not None and client.auth_method == "private_key_jwt" else None
        if client is None or key_set is None:
            raise invalid
        now = tokens.now_us(request)
        try:
            checked = assertions.verify_assertion(
                str(assertion), client_id=client.client_id, keys=key_set,
                audience=endpoints(request)["token_endpoint"], now=now / 1_000_000,
            )  # fmt: skip
        except assertions.AssertionRefused as exc:
            raise tokens.OAuthError("invalid_client", str(exc), 401) from exc
        async with _db(request).transaction() as conn:
            # jti is single-use: of two concurrent uses, one inserts and the other finds it.
            seen = await conn.fetchval(
                "SELECT 1 FROM oauth_jti WHERE client_id = $1 AND jti = $2", client.client_id, checked.jti
            )
            inserted = 0
            if not seen:
                await conn.execute("DELETE FROM oauth_jti WHERE expires_at < $1", now)
                inserted = await conn.execute(
                    "INSERT INTO oauth_jti (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    client.client_id, checked.jti, (checked.exp + assertions.LEEWAY) * 1_000_000,
                )  # fmt: skip
        if seen or inserted != 1:
            raise tokens.OAuthError("invalid_client", "the assertion's jti was already used", 401)
    else:
        async with _db(request).reader() as conn:
            client = await get_client(conn, form_id or "")
        if client is None or client.auth_method != "none" or require_confidential:
            raise invalid
    if client.disabled or (form_id is not None and form_id != client.client_id):
        raise invalid
    return client


async def token(request: Request) -> Response:
    # Public route: the client authenticates in the request itself.
    form = await request.form()
    slow = _throttled(request, form)
    if slow is not None:
        return slow
    await _purge_now_and_then(request)
    grant_type = form.get("grant_type")
    try:
        client = await authenticate_client(
            request, form, require_confidential=grant_type == "client_credentials"
        )
    except tokens.OAuthError as exc:
        return _oauth_error(exc, basic=_basic(request) is not None)
    if grant_type == "authorization_code":
        return await _token_from_code(request, form, client)
    if grant_type == "refresh_token":
        return await _token_from_refresh(request, form, client)
    if grant_type == "client_credentials":
        return await _token_for_backend(request, form, client)
    return _oauth_error(
        tokens.OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
    )


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


PURGE_EVERY = 600  # seconds between purges of expired rows, per process


async def _purge_now_and_then(request: Request) -> None:
    """Expired codes and tokens are deleted by the token endpoint itself, at most every ten minutes
    per process: no job to schedule, and an idle installation has nothing to purge."""
    state = request.app.state
    now = tokens.now_us(request)
    if now - getattr(state, "smart_purged_at", 0) < PURGE_EVERY * 1_000_000:
        return
    state.smart_purged_at = now
    async with _db(request).transaction() as conn:
        await tokens.purge_expired(conn, now)


def _throttled(request: Request, form: FormData) -> Response | None:
    """429 with Retry-After when this client or this address has sent too many requests to the
    token, revocation or introspection endpoint in the last minute; None otherwise."""
    limiter = _throttle(request)
    client_key = (_basic(request) or (str(form.get("client_id", "")), ""))[0] or assertions.unverified_issuer(
        str(form.get("client_assertion", ""))
    )
    # The direct peer, as identity's sign-in throttle counts it (sessions.client_address).
    for key in (f"ip:{client_address(request)}", f"client:{client_key}" if client_key else ""):
        wait = limiter.hit(key) if key else 0
        if wait:
            return JSONResponse(
                {"error": "slow_down", "error_description": "too many requests; retry later"}, status_code=429,
                headers={**_NO_STORE, "Retry-After": str(wait)},
            )  # fmt: skip
    return None


def _throttle(request: Request) -> Throttle:
    state = request.app.state
    limiter = getattr(state, "smart_throttle", None)
    if limiter is None:
        limiter = state.smart_throttle = Throttle(request.app.state.settings.smart_token_requests_per_minute)
    return limiter


async def _token_from_code(request: Request, form: FormData, client: Client) -> Response:
    if "authorization_code" not in client.grant_types:
        return _oauth_error(
            tokens.OAuthError("unauthorized_client", "this client may not use authorization codes")
        )
    now = tokens.now_us(request)
    failure: tokens.OAuthError | None = None
    async with _db(request).transaction() as conn:
        try:
            grant, nonce = await tokens.redeem_code(
                conn, code=str(form.get("code", "")), client_id=client.client_id,
                redirect_uri=_field(form, "redirect_uri"),
                verifier=_field(form, "code_verifier"), now=now,
            )  # fmt: skip
            issued = await tokens.issue_tokens(conn, grant, grant.scopes, now)
        except tokens.OAuthError as exc:
            failure = exc  # the transaction still commits: a spent code stays spent
    if failure is not None:
        return _oauth_error(failure)
    return JSONResponse(await _token_body(request, client, grant, issued, nonce, now), headers=_NO_STORE)


async def _token_body(
    request: Request, client: Client, grant: tokens.Grant, issued: tokens.Issued, nonce: str | None, now: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
        "scope": " ".join(issued.scopes),
    }  # fmt: skip
    if grant.patient_id and (grant.actor_kind in ("patient", "proxy")):
        body["patient"] = grant.patient_id
    if issued.refresh_token:
        body["refresh_token"] = issued.refresh_token
    if "openid" in issued.scopes and grant.account_id is not None:
        claims: dict[str, Any] = {
            "iss": base_url(request), "sub": grant.account_id, "aud": client.client_id,
            "iat": now // 1_000_000, "exp": now // 1_000_000 + tokens.ACCESS_TTL,
        }  # fmt: skip
        if nonce:
            claims["nonce"] = nonce
        if grant.fhir_user and "fhirUser" in issued.scopes:
            claims["fhirUser"] = f"{base_url(request)}/{grant.fhir_user}"
        body["id_token"] = (await _keys(request)).sign(claims)
    return body


async def _token_from_refresh(request: Request, form: FormData, client: Client) -> Response:
    now = tokens.now_us(request)
    wanted = sc.split(str(form["scope"])) if form.get("scope") else None
    failure: tokens.OAuthError | None = None
    async with _db(request).transaction() as conn:
        try:
            grant, issued = await tokens.rotate_refresh(
                conn, refresh_token=str(form.get("refresh_token", "")), client_id=client.client_id, scopes=wanted,
                now=now,
            )  # fmt: skip
        except tokens.OAuthError as exc:
            failure = exc  # commit: a detected reuse revokes the family for good
    if failure is not None:
        return _oauth_error(failure)
    return JSONResponse(await _token_body(request, client, grant, issued, None, now), headers=_NO_STORE)


async def _token_for_backend(request: Request, form: FormData, client: Client) -> Response:
    if "client_credentials" not in client.grant_types or client.org_id is None:
        return _oauth_error(
            tokens.OAuthError("unauthorized_client", "this client may not use client_credentials")
        )
    requested = sc.split(str(form["scope"])) if form.get("scope") else list(client.scopes)
    granted = [
        s
        for s in requested
        if (p := sc.parse_scope(s)) and p.level == "system" and sc.within(s, client.scopes)
    ]
    if not granted:
        return _oauth_error(
            tokens.OAuthError("invalid_scope", "request system/ scopes this client is registered for")
        )
    now = tokens.now_us(request)
    device = client.device_id
    grant = tokens.Grant(
        grant_id=tokens.new_id(), client_id=client.client_id, org_id=client.org_id, account_id=None,
        actor_kind=(ActorKind.DEVICE if device else ActorKind.APP).value, roles=(),
        fhir_user=f"Device/{device}" if device else None, patient_id=None, scopes=tuple(granted),
        aud=base_url(request),
    )  # fmt: skip
    async with _db(request).transaction() as conn:
        await tokens.create_grant(conn, grant, now)
        issued = await tokens.issue_tokens(conn, grant, grant.scopes, now)
    return JSONResponse(await _token_body(request, client, grant, issued, None, now), headers=_NO_STORE)


# -- revoke and introspect -----------------------------------------------------------------------


async def _throttled_client(request: Request, form: Any, *, confidential: bool) -> Client | Response:
    """The client that authenticated in ``form``, or the response refusing it (throttled or failed)."""
    slow = _throttled(request, form)
    if slow is not None:
        return slow
    try:
        return await authenticate_client(request, form, require_confidential=confidential)
    except tokens.OAuthError as exc:
        return _oauth_error(exc, basic=_basic(request) is not None)


async def revoke(request: Request) -> Response:
    # Public route: the client authenticates in the request (public clients by client_id).
    form = await request.form()
    client = await _throttled_client(request, form, confidential=False)
    if isinstance(client, Response):
        return client
    value = str(form.get("token", ""))
    if not value:
        return _oauth_error(tokens.OAuthError("invalid_request", "token is required"))
    async with _db(request).transaction() as conn:
        await conn.fetchval("SELECT 1")
        await tokens.revoke_token(conn, value, client.client_id, tokens.now_us(request))
    return Response(status_code=200, headers=_NO_STORE)


async def introspect(request: Request) -> Response:
    # Confidential clients only (RFC 7662 2.1: the endpoint requires authorization).
    form = await request.form()
    client = await _throttled_client(request, form, confidential=True)
    if isinstance(client, Response):
        return client
    async with _db(request).reader() as conn:
        answer = await tokens.introspect(
            conn,
            str(form.get("token", "")),
            tokens.now_us(request),
            client_id=client.client_id,
            org_id=client.org_id,
        )
    return JSONResponse(answer, headers=_NO_STORE)


# -- the patient's connected apps ----------------------------------------------------------------


async def account_apps(request: Request) -> Response:
    # A page for the signed-in person: the apps holding grants they gave or grants on their record.
    user = await current_user(request)
    if user is None:
        return RedirectResponse(signin_url(request.url.path), status_code=303)
    if request.method == "POST":
        return await _revoke_app(request, user)
    async with _db(request).reader() as conn:
        apps = await _apps_of(conn, user, tokens.now_us(request))
    page = _render(request, "apps.html", user=user, apps=apps)
    return page


async def _apps_of(conn: Any, user: SignedInUser, now: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT g.grant_id, g.client_id, c.name, g.scopes, g.created_at, g.patient_id, g.account_id "
        "FROM oauth_grant g JOIN oauth_client c ON c.client_id = g.client_id "
        "WHERE g.revoked_at IS NULL AND g.org_id = $1 AND (g.account_id = $2 OR ($3 <> '' AND g.patient_id = $3)) "
        "AND EXISTS (SELECT 1 FROM oauth_token t WHERE t.grant_id = g.grant_id AND t.revoked_at IS NULL "
        "AND t.used_at IS NULL AND t.expires_at > $4) ORDER BY g.created_at DESC",
        user.org_id, user.account_id, user.patient_id or "", now,
    )  # fmt: skip
    return [
        {"grant_id": r[0], "client_id": r[1], "name": r[2], "scopes": [words for _s, words in _described(r[3].split())],
         "by_other": r[6] != user.account_id}
        for r in rows
    ]  # fmt: skip


async def _revoke_app(request: Request, user: SignedInUser) -> Response:
    form = await request.form()
    if not await _csrf_ok(request):
        return _render(
            request, "error.html", 403, message=_("This form has expired. Reload the page and try again.")
        )
    grant_id = str(form.get("grant", ""))
    now = tokens.now_us(request)
    async with _db(request).transaction() as conn:
        mine = {a["grant_id"] for a in await _apps_of(conn, user, now)}
        if grant_id in mine:
            await tokens.revoke_grant(conn, grant_id, now)
    return RedirectResponse("/account/apps", status_code=303)


def install(app: FastAPI) -> None:
    """Add the authorization server's routes. The two discovery documents under /fhir go first so
    that the FHIR API's catch-all route does not take them."""
    for path, endpoint in (
        ("/fhir/.well-known/smart-configuration", smart_configuration),
        ("/fhir/.well-known/openid-configuration", openid_configuration),
    ):
        app.router.routes.insert(0, Route(path, endpoint, methods=["GET"], include_in_schema=False))
    routes: list[tuple[str, Any, list[str]]] = [
        ("/.well-known/smart-configuration", smart_configuration, ["GET"]),
        ("/oauth/jwks", jwks, ["GET"]),
        ("/oauth/authorize", authorize, ["GET", "POST"]),
        ("/oauth/token", token, ["POST"]),
        ("/oauth/revoke", revoke, ["POST"]),
        ("/oauth/introspect", introspect, ["POST"]),
        ("/account/apps", account_apps, ["GET", "POST"]),
    ]
    for path, endpoint, methods in routes:
        app.router.routes.append(Route(path, endpoint, methods=methods, include_in_schema=False))

    async def registered_origin(origin: str) -> bool:
        # Asked by the CORS middleware (web/security.py) for each cross-origin request.
        async with app.state.db.reader() as conn:
            return origin in await registered_origins(conn)

    app.state.cors_origin_check = registered_origin
