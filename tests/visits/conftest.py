"""Visit tests: the small clinic, a booked video visit with a licensed clinician, the app served by
uvicorn on 127.0.0.1 (for real WebSocket clients and aiortc peers), and a test coturn.

aioice never gathers 127.0.0.1 by itself (it skips loopback interfaces); on this loopback-only
test host every aiortc peer is told its host address is 127.0.0.1. The patch lives here, in tests
only (docs/VIDEO.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import orjson
import pytest
import uvicorn
import websockets

from housecall.access.policy import Access
from housecall.fhir import interactions as ix
from housecall.visits import guests, service
from tests.clinic import Clinic, clinic, told  # noqa: F401
from tests.identity.conftest import _clock_back, env, smtp  # noqa: F401
from tests.support import free_port

SESSION_COOKIE = "__Host-hc_session"


@pytest.fixture(autouse=True)
def _loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def license_(state: str, *, start: str = "2020-01-01", end: str = "2099-12-31") -> dict[str, Any]:
    """A state licence the way demo/generate.py writes one."""
    return {
        "extension": [{"url": service.LICENSE_STATE_EXT,
                       "valueCodeableConcept": {"coding": [{"system": service.USPS, "code": state}]}}],
        "identifier": [{"system": f"{service.LICENSE_SYSTEM}{state}", "value": f"{state}-12345"}],
        "code": {"coding": [{"system": "https://housecall.example/fhir/CodeSystem/qualification",
                             "code": "state-license"}], "text": "State medical license"},
        "period": {"start": start, "end": end},
    }  # fmt: skip


async def system_update(c: Clinic, resource: dict[str, Any]) -> dict[str, Any]:
    async with c.env.db.transaction() as conn:
        ctx = ix.Ctx(conn, c.env.settings, "https://testserver/fhir", Access.system(c.env.org_id))
        out = await ix.update(ctx, resource["resourceType"], resource["id"], resource)
    assert out.stored is not None
    return out.stored.resource()


async def license_clinician(c: Clinic, *licences: dict[str, Any]) -> None:
    prac = await c.read("Practitioner", c.clinician)
    prac["qualification"] = list(licences)
    await system_update(c, prac)


def when(minutes_from_now: float) -> str:
    at = service.now_dt() + dt.timedelta(minutes=minutes_from_now)
    return service.iso(at)


async def book(c: Clinic, *, patient: str | None = None, start_in: float = 5, minutes: int = 20) -> str:
    """A booked video visit of the patient with Dr Carter; returns the Appointment id."""
    appt = await c.create({
        "resourceType": "Appointment",
        "status": "booked",
        "appointmentType": {"coding": [{"system": service.ACT_CODE, "code": "VR", "display": "virtual"}]},
        "start": when(start_in),
        "end": when(start_in + minutes),
        "minutesDuration": minutes,
        "participant": [
            {"actor": {"reference": f"Patient/{patient or c.patient}"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{c.clinician}"}, "status": "accepted"},
        ],
    })  # fmt: skip
    return str(appt["id"])


@dataclass
class Booked:
    clinic: Clinic
    appointment: str

    async def check_in(self, state: str = "VT", phone: str = "802-555-0100") -> Any:
        return await self.clinic.form_post(
            "patient", f"/visits/{self.appointment}/checkin", {"state": state, "phone": phone},
            form_from=f"/visits/{self.appointment}",
        )  # fmt: skip


@pytest.fixture
async def booked(clinic: Clinic) -> Booked:  # noqa: F811
    await license_clinician(clinic, license_("VT"))
    return Booked(clinic, await book(clinic))


# -- the app on a real socket -----------------------------------------------------------------------


@pytest.fixture
async def live(clinic: Clinic) -> AsyncIterator[str]:  # noqa: F811
    """The clinic's app served by uvicorn on 127.0.0.1 in this event loop; yields host:port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(clinic.env.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await task


class Socket:
    """A raw WebSocket client of the visit's signaling, with a mailbox."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def next(self, kind: str, within: float = 5.0) -> dict[str, Any]:
        """The next message of ``kind`` (others are kept in ``seen``)."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} message; seen {[m['type'] for m in self.seen]}")
            message = orjson.loads(await asyncio.wait_for(self.ws.recv(), left))
            self.seen.append(message)
            if message["type"] == kind:
                return message  # type: ignore[no-any-return]

    async def drain(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """Everything that arrives within ``seconds``."""
        out = []
        with contextlib.suppress(TimeoutError):
            while True:
                message = orjson.loads(await asyncio.wait_for(self.ws.recv(), seconds))
                self.seen.append(message)
                out.append(message)
        return out

    async def close(self) -> None:
        await self.ws.close()


def cookie_of(c: Clinic, who: str) -> str:
    value = c.browsers[who].cookies.get(SESSION_COOKIE)
    assert value, who
    return f"{SESSION_COOKIE}={value}"


async def make_guest_link(c: Clinic, appointment: str, label: str = "Interpreter") -> str:
    """A guest link's token, as the clinician's invitation makes one."""
    async with c.env.db.transaction() as conn:
        return await guests.make_link(conn, org_id=c.env.org_id, appointment_id=appointment, label=label,
                                      account_id=c.accounts["clinician"].id)  # fmt: skip


async def open_guest_link(c: Clinic, token: str, browser: httpx.AsyncClient | None = None) -> str:
    """Open the guest link in a browser of its own (a new one unless given), as a guest does;
    returns the ``Cookie`` header of the guest cookie the first opening bound."""
    browser = browser or c.env.client()
    r = await browser.get(f"/guest/{token}")
    assert r.status_code == 303, (r.status_code, r.text[:300])
    value = browser.cookies.get(guests.COOKIE)
    assert value
    return f"{guests.COOKIE}={value}"


@contextlib.asynccontextmanager
async def connect(live: str, appointment: str, cookie: str | None = None, *,
                  origin: str | None = None) -> AsyncIterator[Socket]:  # fmt: skip
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    url = f"ws://{live}/visits/{appointment}/signal"
    async with websockets.connect(url, additional_headers=headers, open_timeout=5) as ws:
        yield Socket(ws)


async def close_code(live: str, appointment: str, cookie: str | None = None, **kw: Any) -> int | None:
    """How the server ends a connection it refuses (the close code), or None if it accepted."""
    try:
        async with connect(live, appointment, cookie, **kw) as sock:
            await sock.ws.recv()
    except websockets.exceptions.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except websockets.exceptions.InvalidStatus as exc:
        return exc.response.status_code
    return None


# -- a test coturn ----------------------------------------------------------------------------------


@dataclass
class Turn:
    port: int
    secret: str

    @property
    def urls(self) -> list[str]:
        return [f"turn:127.0.0.1:{self.port}?transport=udp", f"turn:127.0.0.1:{self.port}?transport=tcp"]


def _wait_tcp(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("coturn did not start")


@pytest.fixture(scope="session")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Turn]:
    """coturn from Debian on 127.0.0.1 with a generated configuration and shared secret (TURN REST
    credentials); loopback peers allowed, which only a test server may do."""
    work: Path = tmp_path_factory.mktemp("coturn")
    port = free_port()
    low = 40000 + secrets.randbelow(200) * 100
    secret = secrets.token_hex(16)
    conf = work / "turnserver.conf"
    conf.write_text(
        "\n".join([
            "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={port}",
            f"min-port={low}", f"max-port={low + 99}", "use-auth-secret", f"static-auth-secret={secret}",
            "realm=housecall.test", "allow-loopback-peers", "no-tls", "no-dtls", "no-cli", "fingerprint",
            f"userdb={work / 'turndb'}", f"pidfile={work / 'turn.pid'}", "simple-log", f"log-file={work / 'turn.log'}",
        ]) + "\n"
    )  # fmt: skip
    proc = subprocess.Popen(
        ["/usr/bin/turnserver", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_tcp(port)
        yield Turn(port, secret)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
