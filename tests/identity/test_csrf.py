"""CSRF: every state-changing route of the application that accepts cookies refuses a request
with a missing or wrong token. The routes come from the application itself, so a new page route
cannot escape the sweep."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx

from housecall.web.csrf import EXEMPT_PREFIXES
from housecall.web.policy import app_routes
from tests.identity.conftest import Env

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every state-changing route, including those of included routers."""
    for path, methods in app_routes(app):
        for method in sorted(methods & STATE_CHANGING):
            yield method, path


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def page_routes(app: Any) -> list[tuple[str, str]]:
    return [(m, p) for m, p in routes(app) if not p.startswith(EXEMPT_PREFIXES)]


async def test_every_state_changing_page_route_refuses_missing_or_wrong_tokens(env: Env) -> None:
    swept = page_routes(env.app)
    assert {
        ("POST", "/signin"),
        ("POST", "/signout"),
        ("POST", "/admin/accounts/{account_id}/{action}"),
    } <= set(swept)
    # An organization admin's full session: the strongest cookie a forged request could ride on.
    admin, _account, _ = await env.staff_session("org_admin")
    accepted = []
    for method, path in swept:
        url = concrete(path)
        for token in (None, "0" * 64, "not-a-token"):
            data = {"email": "x@example.org", "password": "x" * 20, "next": "/account"}
            if token is not None:
                data["csrf"] = token
            r = await admin.request(method, url, data=data)
            if r.status_code != 403:
                accepted.append((method, path, token, r.status_code))
    assert accepted == [], accepted
    assert len(swept) >= 13


async def test_a_token_from_another_session_is_refused(env: Env) -> None:
    mine, _ = await env.patient_session()
    theirs, _ = await env.patient_session()
    their_token = await env.csrf(theirs, "/account")
    r = await mine.post("/signout/everywhere", data={"csrf": their_token})
    assert r.status_code == 403
    r = await mine.post("/signout/everywhere", data={"csrf": await env.csrf(mine, "/account")})
    assert r.status_code == 303


async def test_forms_before_sign_in_use_a_host_cookie_double_submit(env: Env) -> None:
    c = env.client()
    page = await c.get("/signin")
    cookie = next(
        v for k, v in page.headers.multi_items() if k == "set-cookie" and v.startswith("__Host-hc_csrf=")
    )
    assert "secure" in cookie.lower() and "httponly" in cookie.lower() and "path=/" in cookie.lower()
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    fresh = env.client()  # another browser without the cookie, replaying the token
    r = await fresh.post("/signin", data={"email": "a@b.org", "password": "x" * 20, "csrf": token})
    assert r.status_code == 403
    r = await c.post("/signin", data={"email": "a@b.org", "password": "x" * 20, "csrf": token})
    assert r.status_code == 400


async def test_the_refusal_is_a_page_not_a_stack_trace(env: Env) -> None:
    r = await env.client().post("/signin", data={"email": "a@b.org"})
    assert r.status_code == 403 and "text/html" in r.headers["content-type"] and "Traceback" not in r.text
    assert isinstance(r, httpx.Response)
