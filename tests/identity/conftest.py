"""Fixtures for identity tests: a real SMTP server, an app per test in its own organization, and
helpers to create accounts and sign in. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pyotp
import pytest
from aiosmtpd.controller import Controller

from housecall.app import create_app
from housecall.audit.trail import sink_for
from housecall.core.db import Database, open_database
from housecall.core.settings import Settings
from housecall.fhir import interactions as ix
from housecall.identity import service
from housecall.identity.clock import clock
from housecall.identity.service import Account
from tests.support import free_port

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class Mailbox:
    """What a real aiosmtpd server on 127.0.0.1 received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def for_address(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 5.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.for_address(address)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{count} mail(s) to {address} expected, got {len(self.for_address(address))}")

    def link(self, address: str, index: int = -1) -> str:
        body = self.wait_for(address)[index].get_payload(decode=True).decode()
        match = re.search(r"https?://\S+", body)
        assert match, body
        return match.group(0)


@pytest.fixture(scope="session")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(autouse=True)
def _clock_back() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()


def settings_for_tests(database_url: str, smtp_port: int, **extra: Any) -> Settings:
    return Settings(
        database_url=database_url,
        public_url="https://testserver",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        **extra,
    )


@dataclass
class Env:
    """One organization on one engine, with an app and helpers."""

    db: Database
    settings: Settings
    app: Any
    org_id: str
    mail: Mailbox
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, ip: str | None = None) -> httpx.AsyncClient:
        """A browser: its own cookie jar and (by default) its own address, so throttling by
        address in one test does not leak into another."""
        ip = ip or f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        transport = httpx.ASGITransport(app=self.app, client=(ip, 50000))
        c = httpx.AsyncClient(transport=transport, base_url="https://testserver")
        self.clients.append(c)
        return c

    def email(self, name: str = "user") -> str:
        return f"{name}-{secrets.token_hex(4)}@{self.org_id}.example.org"

    async def patient(self) -> str:
        async with self.db.transaction() as conn:
            out = await ix.create(
                service._ctx(conn, self.settings, self.org_id),
                "Patient",
                {"resourceType": "Patient", "name": [{"family": "Test"}]},
            )
        assert out.stored is not None
        return out.stored.res_id

    async def practitioner(self) -> str:
        async with self.db.transaction() as conn:
            out = await ix.create(
                service._ctx(conn, self.settings, self.org_id),
                "Practitioner",
                {"resourceType": "Practitioner", "name": [{"family": "Doc"}]},
            )
        assert out.stored is not None
        return out.stored.res_id

    async def account(
        self, role: str = "patient", *, email: str | None = None, password: str | None = PASSWORD, **kw: Any
    ) -> Account:
        if role == "patient" and "patient_id" not in kw:
            kw["patient_id"] = await self.patient()
        if role == "clinician" and "practitioner_id" not in kw:
            kw["practitioner_id"] = await self.practitioner()
        async with self.db.transaction() as conn:
            return await service.create_account(
                conn, self.org_id, email or self.email(role), role, password, settings=self.settings, **kw
            )

    async def totp_secret(self, account_id: str) -> str:
        async with self.db.reader() as conn:
            return str(await conn.fetchval("SELECT totp_secret FROM account WHERE id = $1", account_id))

    async def csrf(self, client: httpx.AsyncClient, path: str = "/signin") -> str:
        page = await client.get(path)
        match = CSRF.search(page.text)
        assert match, (path, page.status_code, page.text[:500])
        return match.group(1)

    async def post(
        self, client: httpx.AsyncClient, path: str, data: dict[str, str], *, form_from: str | None = None
    ) -> httpx.Response:
        token = await self.csrf(client, form_from or path)
        return await client.post(path, data={**data, "csrf": token})

    async def signin(
        self, client: httpx.AsyncClient, email: str, password: str = PASSWORD, next: str = "/account"
    ) -> httpx.Response:
        return await self.post(client, "/signin", {"email": email, "password": password, "next": next})

    async def enrol(self, client: httpx.AsyncClient, account: Account) -> tuple[str, list[str]]:
        """Walk the enrolment page: returns (secret, recovery codes)."""
        page = await client.get("/mfa/enrol")
        assert page.status_code == 200, page.text[:300]
        secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.text).group(1).replace(" ", "")  # type: ignore[union-attr]
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        done = await client.post("/mfa/enrol", data={"code": pyotp.TOTP(secret).now(), "csrf": token})
        assert done.status_code == 200, done.text[:500]
        codes = re.findall(r"<code>([a-z0-9]{5}-[a-z0-9]{5})</code>", done.text)
        return secret, codes

    async def staff_session(self, role: str = "nurse", **kw: Any) -> tuple[httpx.AsyncClient, Account, str]:
        """A fully signed-in staff browser (enrolled in MFA); returns (client, account, secret)."""
        account = await self.account(role, **kw)
        c = self.client()
        r = await self.signin(c, account.email)
        assert r.status_code == 303 and r.headers["location"].startswith("/mfa/enrol")
        secret, _codes = await self.enrol(c, account)
        return c, account, secret

    async def patient_session(self) -> tuple[httpx.AsyncClient, Account]:
        account = await self.account("patient")
        c = self.client()
        r = await self.signin(c, account.email)
        assert r.status_code == 303 and r.headers["location"] == "/account", r.text[:300]
        return c, account


@pytest.fixture
async def env(database_url: str, smtp: tuple[Mailbox, int]) -> AsyncIterator[Env]:
    box, port = smtp
    settings = settings_for_tests(database_url, port)
    app = create_app(settings)
    db: Database = open_database(database_url)
    await db.connect()
    app.state.db = db
    org_id = "org-" + secrets.token_hex(5)
    async with db.transaction() as conn:
        await service.create_organization(conn, org_id, "Test Health " + org_id, settings=settings)
    e = Env(db, settings, app, org_id, box)
    yield e
    for c in e.clients:
        await c.aclose()
    await sink_for(app.state).close()  # the events still queued, before their database goes
    await db.close()


def totp_at(secret: str, offset_steps: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.at(clock.now() + offset_steps * totp.interval)


async def settle() -> None:
    await asyncio.sleep(0)
