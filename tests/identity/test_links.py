"""E-mailed links through a real SMTP server: set-up, verification and password reset are single
use and short lived; reset ends every session; messages carry no health information."""

from __future__ import annotations

from urllib.parse import urlsplit

from housecall.core.mail import Outbox
from housecall.identity import service
from housecall.identity.clock import clock
from tests.identity.conftest import PASSWORD, Env

NEW_PASSWORD = "a brand new passphrase for me"


def path_of(link: str) -> str:
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == "https://testserver"  # from settings, not the Host header
    return parts.path + "?" + parts.query


async def invite(env: Env, role: str = "patient") -> service.Account:
    outbox = Outbox()
    kw = {"patient_id": await env.patient()} if role == "patient" else {}
    async with env.db.transaction() as conn:
        account = await service.create_account(
            conn, env.org_id, env.email(role), role, None, outbox=outbox, settings=env.settings, **kw
        )
    assert await outbox.send(env.settings) == 1
    return account


async def test_an_invited_account_sets_its_password_through_the_mailed_link(env: Env) -> None:
    account = await invite(env)
    assert not account.email_verified and not account.has_password
    mail = env.mail.wait_for(account.email)[0]
    assert mail["Subject"] == "Set up your Housecall account"
    c = env.client()
    link = path_of(env.mail.link(account.email))
    form = await c.get(link)
    assert form.status_code == 200 and 'autocomplete="new-password"' in form.text
    token = link.split("token=", 1)[1]
    weak = await env.post(c, "/password/reset", {"token": token, "password": "password1234"}, form_from=link)
    assert weak.status_code == 400 and "breaches" in weak.text  # the link still works after a refusal
    r = await env.post(c, "/password/reset", {"token": token, "password": NEW_PASSWORD}, form_from=link)
    assert r.status_code == 200 and "Password saved" in r.text
    again = await c.get(link)
    assert again.status_code == 400 and "does not work" in again.text
    r = await env.post(
        env.client(),
        "/password/reset",
        {"token": token, "password": NEW_PASSWORD + "x"},
        form_from="/password/forgot",
    )
    assert r.status_code == 400
    assert (await env.signin(env.client(), account.email, NEW_PASSWORD)).status_code == 303
    async with env.db.reader() as conn:
        refreshed = await service.get_account(conn, account.id)
    assert refreshed is not None and refreshed.email_verified


async def test_reset_link_lives_30_minutes(env: Env) -> None:
    account = await env.account("patient")
    c = env.client()
    r = await env.post(c, "/password/forgot", {"email": account.email.upper()})
    assert r.status_code == 200
    link = path_of(env.mail.link(account.email))
    clock.advance(29 * 60)
    assert (await c.get(link)).status_code == 200
    clock.advance(61)
    assert (await c.get(link)).status_code == 400
    token = link.split("token=", 1)[1]
    r = await env.post(
        c, "/password/reset", {"token": token, "password": NEW_PASSWORD}, form_from="/password/forgot"
    )
    assert r.status_code == 400
    assert (await env.signin(env.client(), account.email, PASSWORD)).status_code == 303


async def test_reset_ends_every_session_and_only_the_newest_link_works(env: Env) -> None:
    signed_in, account = await env.patient_session()
    c = env.client()
    await env.post(c, "/password/forgot", {"email": account.email})
    first = path_of(env.mail.link(account.email))
    await env.post(c, "/password/forgot", {"email": account.email})
    env.mail.wait_for(account.email, 2)
    second = path_of(env.mail.link(account.email))
    assert first != second
    assert (await c.get(first)).status_code == 400
    token = second.split("token=", 1)[1]
    r = await env.post(c, "/password/reset", {"token": token, "password": NEW_PASSWORD}, form_from=second)
    assert r.status_code == 200
    assert (await signed_in.get("/account")).status_code == 303
    assert (await env.signin(env.client(), account.email, PASSWORD)).status_code == 400


async def test_forgot_password_says_the_same_for_unknown_addresses_and_sends_nothing(env: Env) -> None:
    account = await env.account("patient")
    c = env.client()
    known = await env.post(c, "/password/forgot", {"email": account.email})
    unknown_address = env.email("nobody")
    unknown = await env.post(c, "/password/forgot", {"email": unknown_address})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    env.mail.wait_for(account.email)
    assert env.mail.for_address(unknown_address) == []


async def test_reset_requests_are_limited_per_address(env: Env) -> None:
    account = await env.account("patient")
    c = env.client()
    for _ in range(8):
        r = await env.post(c, "/password/forgot", {"email": account.email})
        assert r.status_code == 200
    env.mail.wait_for(account.email, 5)
    assert len(env.mail.for_address(account.email)) == 5


async def test_verification_link_takes_a_post_and_is_single_use(env: Env) -> None:
    account = await env.account("patient", email_verified=False)
    c, _ = env.client(), None
    await env.signin(c, account.email)
    page = await c.get("/account")
    assert "not confirmed yet" in page.text
    r = await env.post(c, "/account/verify-email", {}, form_from="/account")
    assert r.status_code == 303
    link = path_of(env.mail.link(account.email))
    assert (await c.get(link)).status_code == 200  # opening the link (or a mail scanner) uses nothing
    assert (await c.get(link)).status_code == 200
    token = link.split("token=", 1)[1]
    r = await env.post(c, "/verify", {"token": token}, form_from=link)
    assert r.status_code == 200 and "confirmed" in r.text
    r = await env.post(c, "/verify", {"token": token}, form_from="/account")
    assert r.status_code == 400
    assert "not confirmed yet" not in (await c.get("/account")).text


async def test_verification_link_expires_after_72_hours(env: Env) -> None:
    account = await env.account("patient", email_verified=False)
    outbox = Outbox()
    async with env.db.transaction() as conn:
        token = await service.send_link(conn, account, "verify", outbox, env.settings)
    clock.advance(72 * 3600 + 1)
    async with env.db.transaction() as conn:
        assert await service.verify_email(conn, token) is None


async def test_tokens_are_stored_hashed_and_mail_holds_only_a_link(env: Env) -> None:
    account = await env.account("patient")
    await env.post(env.client(), "/password/forgot", {"email": account.email})
    link = env.mail.link(account.email)
    token = link.split("token=", 1)[1]
    async with env.db.reader() as conn:
        stored = await conn.fetch("SELECT token_hash FROM email_token WHERE account_id = $1", account.id)
    assert [r[0] for r in stored] == [service.sha256(token)]
    body = env.mail.wait_for(account.email)[0].get_payload(decode=True).decode()
    assert account.patient_id not in body and "Patient" not in body
