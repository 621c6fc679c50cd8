"""CSRF protection for every state-changing page route (SECURITY.md row 20).

The token in a form is HMAC-SHA256(anchor, "housecall-csrf") where the anchor is a secret the
attacker's page cannot read: the session cookie once there is a session (a synchronizer token
bound to the session, nothing stored), or before sign-in the ``__Host-hc_csrf`` cookie set with
the form (double submit; the ``__Host-`` prefix stops a sibling subdomain from planting it).
SameSite=Lax cookies are a second line, not the defence.

Routers of pages declare ``dependencies=[Depends(csrf_guard)]``, so a route added to them cannot
forget it; the test suite sweeps every POST/PUT/PATCH/DELETE route of the application and proves
each refuses a missing or wrong token, except the prefixes in ``EXEMPT_PREFIXES`` (APIs that do
not use cookies).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from housecall.identity.sessions import SESSION_COOKIE

PRE_COOKIE = "__Host-hc_csrf"
FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes that ignore cookies, so a forged cross-site request carries no authority: the FHIR API
# (bearer tokens) and the OAuth endpoints where the client authenticates itself or presents a
# token (RFC 6749 §3.2, RFC 7009, RFC 7662). Everything else that changes state is swept.
EXEMPT_PREFIXES: tuple[str, ...] = ("/fhir", "/oauth/token", "/oauth/revoke", "/oauth/introspect")


class CsrfFailed(Exception):
    """The form's token is missing or does not match: answered with 403 and a page to go back."""


def _derive(anchor: str) -> str:
    return hmac.new(anchor.encode(), b"housecall-csrf", hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The token to put in this page's forms (``{{ csrf_field() }}`` in templates)."""
    anchor = request.cookies.get(SESSION_COOKIE) if getattr(request.state, "hc_session", None) else None
    if anchor is None:
        anchor = getattr(request.state, "hc_new_pre_csrf", None) or request.cookies.get(PRE_COOKIE)
        if not anchor or len(anchor) > 100:
            anchor = secrets.token_urlsafe(32)
            request.state.hc_new_pre_csrf = anchor
    return _derive(anchor)


def set_pre_cookie(request: Request, response: Response) -> None:
    """Called by ``render``: sends the pre-session anchor when this response created one."""
    anchor = getattr(request.state, "hc_new_pre_csrf", None)
    if anchor:
        response.set_cookie(PRE_COOKIE, anchor, secure=True, httponly=True, samesite="lax", path="/")


async def csrf_guard(request: Request) -> None:
    """Router dependency: refuse a state-changing request whose form lacks a valid token."""
    if request.method in SAFE_METHODS:
        return
    token = ""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(FIELD)
        token = value if isinstance(value, str) else ""
    token = token or request.headers.get("x-csrf-token", "")
    anchors = [a for a in (request.cookies.get(SESSION_COOKIE), request.cookies.get(PRE_COOKIE)) if a]
    if not token or not any(hmac.compare_digest(token, _derive(a)) for a in anchors if len(a) <= 100):
        raise CsrfFailed
