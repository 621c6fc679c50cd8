"""MFA: required for staff and clinicians, optional for patients; TOTP steps are single use;
recovery codes are single use and stored hashed; an admin can reset a lost authenticator."""

from __future__ import annotations

import re

import pyotp
import pytest

from housecall.identity import service
from housecall.identity.clock import clock
from tests.identity.conftest import CSRF, PASSWORD, Env, totp_at


async def mfa_signin(env: Env, email: str) -> object:
    c = env.client()
    r = await env.signin(c, email)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin/mfa"), r.headers.get("location")
    return c


@pytest.mark.parametrize(
    "role", ["clinician", "front_desk", "nurse", "rpm_nurse", "interpreter", "org_admin", "privacy_officer"]
)
async def test_every_staff_role_must_enrol_before_anything_else(env: Env, role: str) -> None:
    account = await env.account(role)
    assert account.requires_mfa
    c = env.client()
    r = await env.signin(c, account.email)
    assert r.status_code == 303 and r.headers["location"].startswith("/mfa/enrol")
    for path in ("/account", "/admin/accounts", "/signin/confirm", "/signout"):
        r = await c.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/mfa/enrol", path
    _secret, codes = await env.enrol(c, account)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert (await c.get("/account")).status_code == 200


async def test_enrolment_page_shows_qr_svg_and_the_secret_without_inline_script(env: Env) -> None:
    account = await env.account("nurse")
    c = env.client()
    await env.signin(c, account.email)
    page = await c.get("/mfa/enrol")
    assert "<svg" in page.text and 'role="img"' in page.text
    assert "<script" not in page.text and "style=" not in page.text
    assert re.search(r'id="totp-secret">[A-Z2-7 ]{32,}<', page.text)
    again = await c.get("/mfa/enrol")  # reloading keeps the same secret (the app may have it already)
    assert re.search(r'id="totp-secret">([A-Z2-7 ]+)<', again.text).group(1) == re.search(
        r'id="totp-secret">([A-Z2-7 ]+)<', page.text
    ).group(1)  # type: ignore[union-attr]


async def test_a_wrong_enrolment_code_is_refused(env: Env) -> None:
    account = await env.account("nurse")
    c = env.client()
    await env.signin(c, account.email)
    page = await c.get("/mfa/enrol")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = await c.post("/mfa/enrol", data={"code": "000000", "csrf": token})
    assert r.status_code == 200 and 'aria-invalid="true"' in r.text and "error-summary" in r.text
    assert (await c.get("/account")).headers["location"] == "/mfa/enrol"


async def test_patients_may_sign_in_without_mfa_and_may_turn_it_on(env: Env) -> None:
    c, account = await env.patient_session()
    assert not account.requires_mfa
    secret, _codes = await env.enrol(c, account)
    c2 = await mfa_signin(env, account.email)
    clock.advance(30)
    token = await env.csrf(c2, "/signin/mfa")
    r = await c2.post("/signin/mfa", data={"code": totp_at(secret), "csrf": token, "next": "/account"})  # type: ignore[attr-defined]
    assert r.status_code == 303 and r.headers["location"] == "/account"


async def test_a_totp_code_cannot_be_replayed(env: Env) -> None:
    _c, account, secret = await env.staff_session()
    clock.advance(60)
    code = totp_at(secret)
    first = await mfa_signin(env, account.email)
    token = await env.csrf(first, "/signin/mfa")  # type: ignore[arg-type]
    r = await first.post("/signin/mfa", data={"code": code, "csrf": token})  # type: ignore[attr-defined]
    assert r.status_code == 303
    second = await mfa_signin(env, account.email)
    token = await env.csrf(second, "/signin/mfa")  # type: ignore[arg-type]
    r = await second.post("/signin/mfa", data={"code": code, "csrf": token})  # type: ignore[attr-defined]
    assert r.status_code == 400 and "used already" in r.text
    # Nor can the previous step's code (still inside the drift window) be used after a newer one.
    assert not await _check(env, account.id, totp_at(secret, -1))
    clock.advance(30)
    assert await _check(env, account.id, totp_at(secret))


async def _check(env: Env, account_id: str, code: str) -> bool:
    async with env.db.transaction() as conn:
        return await service.check_totp(conn, account_id, code)


async def test_codes_from_other_times_are_refused(env: Env) -> None:
    _c, account, secret = await env.staff_session()
    clock.advance(300)
    assert not await _check(env, account.id, totp_at(secret, -3))
    assert not await _check(env, account.id, totp_at(secret, 3))
    assert not await _check(env, account.id, "12345")
    assert not await _check(env, account.id, "abcdef")
    assert await _check(env, account.id, totp_at(secret, 1))  # one step of drift is tolerated


async def test_recovery_codes_are_single_use_and_stored_hashed(env: Env) -> None:
    account = await env.account("clinician")
    c = env.client()
    await env.signin(c, account.email)
    _secret, codes = await env.enrol(c, account)
    async with env.db.reader() as conn:
        stored = [
            r[0]
            for r in await conn.fetch("SELECT code_hash FROM recovery_code WHERE account_id = $1", account.id)
        ]
    assert len(stored) == 10 and not set(stored) & {c.replace("-", "") for c in codes}
    c2 = await mfa_signin(env, account.email)
    token = await env.csrf(c2, "/signin/mfa")  # type: ignore[arg-type]
    r = await c2.post("/signin/mfa", data={"recovery": codes[3].upper(), "csrf": token})  # type: ignore[attr-defined]
    assert r.status_code == 303
    c3 = await mfa_signin(env, account.email)
    token = await env.csrf(c3, "/signin/mfa")  # type: ignore[arg-type]
    r = await c3.post("/signin/mfa", data={"recovery": codes[3], "csrf": token})  # type: ignore[attr-defined]
    assert r.status_code == 400
    async with env.db.reader() as conn:
        assert await service.recovery_codes_left(conn, account.id) == 9


async def test_the_mfa_step_expires_after_15_minutes(env: Env) -> None:
    _c, account, _secret = await env.staff_session()
    c = await mfa_signin(env, account.email)
    clock.advance(15 * 60 + 1)
    r = await c.get("/signin/mfa")  # type: ignore[attr-defined]
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")


async def test_admin_reset_of_mfa_ends_sessions_and_requires_enrolment_again(env: Env) -> None:
    c, account, _secret = await env.staff_session()
    async with env.db.transaction() as conn:
        assert await service.reset_mfa(conn, env.org_id, account.id)
        assert not await service.reset_mfa(conn, "another-org", account.id)
    assert (await c.get("/account")).status_code == 303
    c2 = env.client()
    r = await env.signin(c2, account.email, PASSWORD)
    assert r.headers["location"].startswith("/mfa/enrol")
    assert pyotp  # the enrolment helper uses pyotp as an authenticator app would
