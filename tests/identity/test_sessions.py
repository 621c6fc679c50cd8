"""Sessions: cookie flags, a new id at sign-in, sign-out (here and everywhere), idle and absolute
expiry proved by moving the clock, the Actor, and re-authentication."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from starlette.requests import Request

from housecall.access.actor import ActorKind, Role
from housecall.identity import service, sessions
from housecall.identity.clock import clock
from housecall.identity.sessions import SESSION_COOKIE
from tests.identity.conftest import PASSWORD, Env, totp_at


def cookie_of(response: httpx.Response) -> str:
    return next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE)
    )


async def is_signed_in(client: httpx.AsyncClient) -> bool:
    r = await client.get("/account")
    return r.status_code == 200


async def test_cookie_is_host_prefixed_secure_httponly_lax(env: Env) -> None:
    account = await env.account("patient")
    r = await env.signin(env.client(), account.email)
    header = cookie_of(r).lower()
    assert header.startswith("__host-hc_session=")
    assert "; secure" in header and "; httponly" in header and "samesite=lax" in header and "path=/" in header
    assert "domain=" not in header and "max-age" not in header and "expires" not in header


async def test_a_new_session_id_at_each_sign_in_step_fixation(env: Env) -> None:
    c, account, secret = await env.staff_session()
    planted = c.cookies.get(SESSION_COOKIE)
    await c.post("/signout", data={"csrf": await env.csrf(c, "/account")})
    # An attacker plants a cookie value; sign-in must not keep it.
    attacker = env.client()
    r = await env.signin(attacker, account.email)
    pending = attacker.cookies.get(SESSION_COOKIE)
    assert pending and pending != planted
    clock.advance(30)
    token = await env.csrf(attacker, "/signin/mfa")
    r = await attacker.post("/signin/mfa", data={"code": totp_at(secret), "csrf": token})
    assert r.status_code == 303
    full = attacker.cookies.get(SESSION_COOKIE)
    assert full and full != pending
    # The half-signed-in id is dead.
    stale = env.client()
    stale.cookies.set(SESSION_COOKIE, pending, domain="testserver")
    assert not await is_signed_in(stale)


async def test_sign_out_ends_the_session_on_the_server(env: Env) -> None:
    c, _account = await env.patient_session()
    raw = c.cookies.get(SESSION_COOKIE)
    r = await c.post("/signout", data={"csrf": await env.csrf(c, "/account")})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    assert SESSION_COOKIE in r.headers["set-cookie"]
    replay = env.client()
    replay.cookies.set(SESSION_COOKIE, raw, domain="testserver")
    r = await replay.get("/account")
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=/account"
    async with env.db.reader() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM auth_session WHERE id_hash = $1", service.sha256(raw))
            == 0
        )


async def test_session_ids_are_stored_hashed(env: Env) -> None:
    c, account = await env.patient_session()
    raw = c.cookies.get(SESSION_COOKIE)
    async with env.db.reader() as conn:
        rows = await conn.fetch("SELECT id_hash FROM auth_session WHERE account_id = $1", account.id)
    assert [r[0] for r in rows] == [service.sha256(raw)]


async def test_sign_out_everywhere(env: Env) -> None:
    account = await env.account("patient")
    phone, laptop = env.client(), env.client()
    await env.signin(phone, account.email)
    await env.signin(laptop, account.email)
    assert await is_signed_in(phone) and await is_signed_in(laptop)
    r = await laptop.post("/signout/everywhere", data={"csrf": await env.csrf(laptop, "/signout")})
    assert r.status_code == 303
    assert not await is_signed_in(phone)
    assert not await is_signed_in(laptop)


@pytest.mark.parametrize("role", ["nurse", "clinician"])
async def test_staff_idle_timeout_30_minutes(env: Env, role: str) -> None:
    c, _account, _secret = await env.staff_session(role)
    clock.advance(29 * 60)
    assert await is_signed_in(c)  # activity resets the idle timer
    clock.advance(29 * 60)
    assert await is_signed_in(c)
    clock.advance(30 * 60 + 1)
    assert not await is_signed_in(c)


async def test_staff_absolute_timeout_12_hours_despite_activity(env: Env) -> None:
    c, _account, _secret = await env.staff_session()
    for _ in range(11 * 60 // 20 + 2):  # active every 20 minutes until just short of 12 h
        clock.advance(20 * 60)
        if clock.offset >= 12 * 3600:
            break
        assert await is_signed_in(c), clock.offset
    clock.advance(12 * 3600 - clock.offset)
    assert not await is_signed_in(c)


async def test_patient_idle_30_minutes_absolute_7_days(env: Env) -> None:
    c, _account = await env.patient_session()
    clock.advance(30 * 60 + 1)
    assert not await is_signed_in(c)
    c, _account = await env.patient_session()
    start = clock.offset
    while clock.offset - start < 7 * 24 * 3600 - 25 * 60:
        clock.advance(25 * 60)
        assert await is_signed_in(c)
    clock.advance(7 * 24 * 3600 - (clock.offset - start))
    assert not await is_signed_in(c)


def fake_request(env: Env, client: httpx.AsyncClient, path: str = "/x") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [(b"cookie", f"{SESSION_COOKIE}={client.cookies.get(SESSION_COOKIE)}".encode())],
        "app": env.app,
    }
    return Request(scope)


async def test_actor_for_request(env: Env) -> None:
    c, account = await env.patient_session()
    actor = await sessions.actor_for_request(fake_request(env, c))
    assert actor is not None
    assert (actor.kind, actor.org_id, actor.account_id, actor.patient_id) == (
        ActorKind.PATIENT, env.org_id, account.id, account.patient_id,
    )  # fmt: skip
    assert actor.fhir_user == f"Patient/{account.patient_id}" and actor.scopes is None
    assert actor.session_id and actor.session_id not in c.cookies.get(SESSION_COOKIE)
    assert service.sha256(c.cookies.get(SESSION_COOKIE)) != actor.session_id
    signed = await sessions.signed_in(fake_request(env, c))
    assert signed is not None and signed.id == account.id
    assert await sessions.actor_for_request(fake_request(env, env.client())) is None

    staff, staff_account, _ = await env.staff_session("clinician", extra_roles=["org_admin"])
    actor = await sessions.actor_for_request(fake_request(env, staff))
    assert actor is not None and actor.kind is ActorKind.PRACTITIONER
    assert actor.roles == frozenset({Role.CLINICIAN, Role.ORG_ADMIN}) and actor.patient_id is None
    assert actor.fhir_user == f"Practitioner/{staff_account.practitioner_id}"


async def test_staff_before_mfa_enrolment_is_not_signed_in(env: Env) -> None:
    account = await env.account("front_desk")
    c = env.client()
    r = await env.signin(c, account.email)
    assert r.headers["location"].startswith("/mfa/enrol")
    assert await sessions.signed_in(fake_request(env, c)) is None
    assert await sessions.actor_for_request(fake_request(env, c)) is None
    r = await c.get("/account")
    assert r.status_code == 303 and r.headers["location"] == "/mfa/enrol"
    r = await c.get("/admin/accounts")
    assert r.status_code == 303 and r.headers["location"] == "/mfa/enrol"


async def test_re_authentication_stamps_the_session(env: Env) -> None:
    c, account, secret = await env.staff_session("clinician")
    clock.advance(20 * 60)
    request = fake_request(env, c, "/break-glass/start")
    with pytest.raises(sessions.SignInRequired) as needed:
        await sessions.require_fresh_auth(request, within_seconds=300)
    assert needed.value.location == "/signin/confirm?next=" + quote("/break-glass/start", safe="/")
    page = await c.get("/signin/confirm?next=/break-glass/start")
    assert page.status_code == 200 and 'autocomplete="one-time-code"' in page.text
    token = await env.csrf(c, "/signin/confirm")
    clock.advance(30)
    wrong = await c.post(
        "/signin/confirm",
        data={
            "password": "not the password",
            "code": totp_at(secret),
            "next": "/break-glass/start",
            "csrf": token,
        },
    )
    assert wrong.status_code == 400
    no_code = await c.post(
        "/signin/confirm", data={"password": PASSWORD, "code": "", "next": "/x", "csrf": token}
    )
    assert no_code.status_code == 400
    r = await c.post(
        "/signin/confirm",
        data={"password": PASSWORD, "code": totp_at(secret), "next": "/break-glass/start", "csrf": token},
    )
    assert r.status_code == 303 and r.headers["location"] == "/break-glass/start"
    actor = await sessions.require_fresh_auth(fake_request(env, c, "/break-glass/start"), within_seconds=300)
    assert actor.account_id == account.id
    assert await sessions.fresh_auth_age(fake_request(env, c)) < 5


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/account", "/account"),
        ("/fhir/Patient?x=1", "/fhir/Patient?x=1"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x", "/"),
        ("", "/"),
    ],
)
def test_next_is_only_a_local_path(given: str, expected: str) -> None:
    assert sessions.safe_next(given) == expected


async def test_sign_in_follows_only_local_next(env: Env) -> None:
    account = await env.account("patient")
    c = env.client()
    r = await env.signin(c, account.email, next="//evil.example/x")
    assert r.headers["location"] == "/"
    r = await env.signin(env.client(), account.email, next="/oauth/authorize?client_id=a&state=b")
    assert r.headers["location"] == "/oauth/authorize?client_id=a&state=b"


async def test_changing_the_password_asks_the_current_one_and_ends_other_sessions(env: Env) -> None:
    c, account = await env.patient_session()
    other = env.client()
    await env.signin(other, account.email)
    new = "a different long passphrase"
    wrong = await env.post(c, "/account/password", {"current_password": "not it at all", "new_password": new})
    assert wrong.status_code == 400 and 'href="#current_password"' in wrong.text
    weak = await env.post(
        c, "/account/password", {"current_password": PASSWORD, "new_password": "password1234"}
    )
    assert weak.status_code == 400 and 'href="#new_password"' in weak.text
    before = c.cookies.get(SESSION_COOKIE)
    r = await env.post(c, "/account/password", {"current_password": PASSWORD, "new_password": new})
    assert r.status_code == 303 and r.headers["location"] == "/account?notice=password"
    assert c.cookies.get(SESSION_COOKIE) != before
    assert await is_signed_in(c)
    assert not await is_signed_in(other)
    assert (await env.signin(env.client(), account.email, PASSWORD)).status_code == 400
    assert (await env.signin(env.client(), account.email, new)).status_code == 303


async def test_purge_removes_only_what_cannot_be_used(env: Env) -> None:
    live, _account = await env.patient_session()
    old, _ = await env.patient_session()
    clock.advance(31 * 60)
    assert await is_signed_in(live) is False  # expired on use...
    c, _ = await env.patient_session()
    async with env.db.transaction() as conn:
        await sessions.purge_expired(conn, env.settings)  # ...and the one never used again goes too
        remaining = await conn.fetch("SELECT id_hash FROM auth_session WHERE id_hash IN ($1, $2, $3)",
                                     *(service.sha256(x.cookies.get(SESSION_COOKIE)) for x in (live, old, c)))  # fmt: skip
    assert [r[0] for r in remaining] == [service.sha256(c.cookies.get(SESSION_COOKIE))]
