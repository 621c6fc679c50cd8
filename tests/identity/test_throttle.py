"""Throttling and enumeration: at most 100 failures per account per hour, per-address limits,
429 with Retry-After, and the same answer for unknown addresses and wrong passwords."""

from __future__ import annotations

import re

import pytest

from housecall.identity import throttle
from housecall.identity.clock import clock
from tests.identity.conftest import PASSWORD, Env


async def test_a_thousand_guesses_give_at_most_100_failures_an_hour(env: Env) -> None:
    account = await env.account("patient")
    attacker = env.client()
    token = await env.csrf(attacker)
    statuses: dict[int, int] = {}
    retry_after: set[int] = set()
    for i in range(1000):
        # Each guess from another address: only the per-account limit can stop this.
        attacker = env.client(ip=f"10.99.{i // 250}.{i % 250 + 1}") if i % 10 == 0 else attacker
        attacker.cookies.set("__Host-hc_csrf", "fixed-anchor-for-the-test", domain="testserver")
        if i % 10 == 0:
            token = await env.csrf(attacker)
        r = await attacker.post(
            "/signin", data={"email": account.email, "password": f"guess number {i}", "csrf": token}
        )
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code == 429:
            retry_after.add(int(r.headers["Retry-After"]))
    assert statuses == {400: 100, 429: 900}
    assert retry_after and all(0 < s <= 3600 for s in retry_after)
    async with env.db.reader() as conn:
        assert await throttle.failures(conn, throttle.account_key(account.email), clock.now_us()) == 100
    # The right password is refused too while the account is throttled...
    r = await env.signin(env.client(), account.email, PASSWORD)
    assert r.status_code == 429 and "Too many attempts" in r.text
    # ...and accepted once the oldest failures have left the one-hour window.
    clock.advance(3600)
    r = await env.signin(env.client(), account.email, PASSWORD)
    assert r.status_code == 303


async def test_unknown_addresses_are_throttled_the_same_way(env: Env) -> None:
    email = env.email("nobody")
    c = env.client()
    token = await env.csrf(c)
    codes = [
        (
            await c.post("/signin", data={"email": email, "password": "whatever it is", "csrf": token})
        ).status_code
        for _ in range(105)
    ]
    assert codes.count(400) == 100 and codes.count(429) == 5


async def test_per_address_limit(env: Env) -> None:
    from housecall.app import create_app

    strict = env.settings.model_copy(update={"signin_failures_per_ip_hour": 20})
    app = create_app(strict)
    app.state.db = env.db
    env.app = app
    c = env.client(ip="10.250.0.1")
    token = await env.csrf(c)
    codes = []
    for i in range(25):  # 25 different accounts from one address
        r = await c.post(
            "/signin", data={"email": env.email(f"n{i}"), "password": "wrong password!", "csrf": token}
        )
        codes.append(r.status_code)
    assert codes.count(400) == 20 and codes.count(429) == 5
    other = env.client(ip="10.250.0.2")
    account = await env.account("patient")
    assert (await env.signin(other, account.email)).status_code == 303


def normalize(body: str, email: str) -> str:
    return re.sub(r'name="csrf" value="[0-9a-f]+"', "", body).replace(email, "EMAIL")


async def test_no_enumeration_unknown_address_and_wrong_password_look_the_same(env: Env) -> None:
    account = await env.account("patient")
    disabled = await env.account("patient")
    async with env.db.transaction() as conn:
        from housecall.identity import service

        await service.disable_account(conn, env.org_id, disabled.id)
    unknown = env.email("patient")
    answers = []
    for email, password in (
        (account.email, "not the password"),
        (unknown, "not the password"),
        (disabled.email, PASSWORD),
    ):
        r = await env.signin(env.client(), email, password)
        answers.append(
            (
                r.status_code,
                normalize(r.text, email),
                "set-cookie" in r.headers and "hc_session" in r.headers["set-cookie"],
            )
        )
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 400 and answers[0][2] is False


async def test_unknown_addresses_cost_the_same_argon2_work_as_wrong_passwords(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing: every path verifies exactly one argon2id hash of the configured cost."""
    from argon2 import PasswordHasher

    verified: list[str] = []
    original = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: str, password: str) -> bool:
        verified.append(hash.split("$")[3])  # the cost parameters
        return original(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    account = await env.account("patient")
    for email in (account.email, env.email("nobody")):
        verified.clear()
        r = await env.signin(env.client(), email, "not the password")
        assert r.status_code == 400
        assert verified == ["m=1024,t=1,p=1"], email
