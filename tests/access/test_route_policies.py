"""Every route has an explicit policy (``web/policy.py``), and each policy holds against the wrong
credentials (SECURITY.md row 6): nothing but public routes answers without credentials, and a
patient's session reaches no staff route. The routes come from the application itself."""

from __future__ import annotations

import re

import httpx

from housecall.web.policy import ROUTES, Policy, app_routes
from tests.identity.conftest import Env

SAMPLE = {"{path:path}": "Patient", "{opening_id}": "0" * 32, "{account_id}": "0" * 32, "{action}": "disable",
          "{client_id}": "x" * 24, "{task_id}": "0" * 32,
          "{appointment_id}": "0" * 32, "{slot_id}": "0" * 32,
          "{thread_id}": "0" * 32, "{message_id}": "0" * 32,
          "{report_id}": "0" * 32, "{code}": "4548-4", "{token}": "x" * 32,
          "{form}": "intake"}  # fmt: skip
# Bills and records (issue 4)
SAMPLE.update(
    {"{invoice_id}": "x" * 8, "{receipt_id}": "x" * 8, "{doc_id}": "x" * 8, "{patient_id}": "x" * 8}
)


def concrete(path: str) -> str:
    for name, value in SAMPLE.items():
        path = path.replace(name, value)
    assert "{" not in path, path
    return path


def routes_with(env: Env, *policies: Policy) -> list[tuple[str, str]]:
    out = []
    for path, methods in app_routes(env.app):
        if ROUTES.get(path) in policies:
            for method in sorted(methods - {"HEAD"}) or ["GET"]:
                out.append((method, concrete(path)))
    return out


def test_every_route_has_a_policy(env: Env) -> None:
    paths = {path for path, _ in app_routes(env.app)}
    assert paths - set(ROUTES) == set(), "routes without a policy in web/policy.py"
    assert set(ROUTES) - paths == set(), "policies for routes that no longer exist"


async def _form_token(browser: httpx.AsyncClient, page: str = "/signin") -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', (await browser.get(page)).text)
    assert match
    return match.group(1)


async def test_without_credentials_only_public_routes_answer(env: Env) -> None:
    browser = env.client()
    token = await _form_token(browser)  # a valid pre-sign-in form token: the refusal is about who, not CSRF
    refused = []
    for method, url in routes_with(env, Policy.SIGNED_IN, Policy.PORTAL, Policy.CLINICAL, Policy.ORG_ADMIN,
                                   Policy.FRONT_DESK, Policy.FHIR, Policy.OAUTH_CLIENT):  # fmt: skip
        if url.endswith("/fhir/Patient") or url.endswith("/fhir"):
            url = url + ("/_search" if method == "POST" and url.endswith("Patient") else "")
        r = await browser.request(method, url, data={"csrf": token} if method == "POST" else None)
        ok = (
            r.status_code == 401
            or (r.status_code == 303 and r.headers["location"].startswith("/signin"))
            or (url.startswith("/oauth/") and r.status_code in (400, 401) and "access_token" not in r.text)
            # A method the FHIR API has on no such path: the API's shape is public (CapabilityStatement).
            or (url.startswith("/fhir") and r.status_code == 405)
        )
        if not ok:
            refused.append(f"{method} {url} -> {r.status_code} {r.text[:120]}")
    assert not refused, "\n".join(refused)


async def test_a_patient_reaches_no_staff_route(env: Env) -> None:
    browser, _ = await env.patient_session()
    token = await _form_token(browser, "/account")
    reached = []
    for method, url in routes_with(env, Policy.CLINICAL, Policy.ORG_ADMIN, Policy.FRONT_DESK):
        r = await browser.request(
            method, url, data={"csrf": token, "patient": "x", "reason": "x" * 40, "minutes": "5"}
        )
        if r.status_code not in (400, 403, 404) and not (
            r.status_code == 303 and r.headers["location"].startswith("/signin")
        ):
            reached.append(f"{method} {url} -> {r.status_code}")
    assert not reached, "\n".join(reached)
    async with env.db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM break_glass WHERE org_id = $1", env.org_id) == 0


async def test_staff_reach_no_portal_route(env: Env) -> None:
    browser, _, _ = await env.staff_session("nurse")
    token = await _form_token(browser, "/account")
    reached = []
    for method, url in routes_with(env, Policy.PORTAL):
        r = await browser.request(method, url, data={"csrf": token})
        if r.status_code != 403:
            reached.append(f"{method} {url} -> {r.status_code}")
    assert not reached, "\n".join(reached)
