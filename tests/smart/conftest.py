"""An in-process Housecall per engine for the SMART tests, with a clock the tests move and a
signed-in person the tests choose (identity's sign-in is exercised for real by the browser test)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from housecall.access.actor import ActorKind
from housecall.app import create_app
from housecall.core.db import Database, open_database
from housecall.core.settings import Settings
from housecall.smart import clients, tokens, views
from housecall.smart.signin import SignedInUser

BASE = "https://testserver"
FHIR = f"{BASE}/fhir"
REDIRECT = "https://app.example.org/callback"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Smart:
    http: httpx.AsyncClient
    db: Database
    clock: Clock
    org: str
    user: SignedInUser | None = None
    app: Any = None
    made: list[str] = field(default_factory=list)

    async def register(self, **kw: Any) -> tuple[clients.Client, str | None]:
        kw.setdefault("name", "Test App")
        kw.setdefault("grant", "authorization_code")
        if kw["grant"] == "authorization_code":
            kw.setdefault("redirect_uris", [REDIRECT])
            kw.setdefault("scopes", ["openid", "fhirUser", "launch/patient", "offline_access", "patient/*.cruds",
                                     "user/*.cruds"])  # fmt: skip
        else:
            kw.setdefault("org_id", self.org)
        async with self.db.transaction() as conn:
            return await clients.create_client(conn, now_us=int(time.time() * 1e6), **kw)

    def sign_in(self, kind: ActorKind = ActorKind.PATIENT, patient_id: str | None = None) -> SignedInUser:
        account = uuid.uuid4().hex
        patient_id = patient_id or (f"p-{account[:8]}" if kind is ActorKind.PATIENT else None)
        self.user = SignedInUser(
            account_id=account, org_id=self.org, kind=kind, roles=("clinician",) if kind is ActorKind.PRACTITIONER else (),
            display_name="Alex Rivera", patient_id=patient_id,
            fhir_user=f"Patient/{patient_id}" if patient_id else f"Practitioner/d-{account[:8]}",
        )  # fmt: skip
        return self.user

    async def whoami(self, access_token: str) -> httpx.Response:
        return await self.http.get("/test/whoami", headers={"Authorization": f"Bearer {access_token}"})


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def auth_params(client_id: str, challenge: str, **over: str | None) -> dict[str, str]:
    p: dict[str, str | None] = {
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "scope": "openid fhirUser launch/patient offline_access patient/Observation.rs patient/Patient.r",
        "state": secrets.token_urlsafe(8), "aud": FHIR, "code_challenge": challenge, "code_challenge_method": "S256",
    }  # fmt: skip
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def consent_form(html: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    return {k: v.replace("&amp;", "&").replace("&#34;", '"').replace("&#39;", "'") for k, v in fields.items()}


async def approve(
    smart: Smart, params: dict[str, str], extra: dict[str, str] | None = None
) -> httpx.Response:
    page = await smart.http.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    form = consent_form(page.text)
    return await smart.http.post("/oauth/authorize", data={**form, "decision": "approve", **(extra or {})})


async def get_code(smart: Smart, client_id: str, **over: str | None) -> tuple[str, str, dict[str, str]]:
    """(code, verifier, params) of an approved authorization request."""
    verifier, challenge = pkce()
    params = auth_params(client_id, challenge, **over)
    answer = await approve(smart, params)
    assert answer.status_code == 303, answer.text
    q = query_of(answer.headers["location"])
    assert q["state"] == params["state"]
    return q["code"], verifier, params


async def exchange(
    smart: Smart, client_id: str, code: str, verifier: str | None, **over: str
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    data.update(over)
    return await smart.http.post("/oauth/token", data=data)


async def _whoami(request: Request) -> Response:
    # A stand-in for the FHIR API's use of the bearer check.
    try:
        actor = await tokens.actor_for_token(request)
    except tokens.InvalidToken as exc:
        return JSONResponse({"error": exc.diagnostics}, status_code=exc.status, headers=exc.headers)
    if actor is None:
        return JSONResponse({"actor": None})
    return JSONResponse({
        "kind": actor.kind.value, "org_id": actor.org_id, "account_id": actor.account_id, "fhir_user": actor.fhir_user,
        "patient_id": actor.patient_id, "client_id": actor.client_id, "scopes": sorted(actor.scopes or ()),
        "session_id": actor.session_id,
    })  # fmt: skip


@pytest.fixture
async def smart(database_url: str) -> AsyncIterator[Smart]:
    async for env in _smart(database_url):
        yield env


@pytest.fixture
async def smart_alone(fresh_database_url: str) -> AsyncIterator[Smart]:
    """On a database of its own: for tests that move the clock days ahead and purge what expired,
    which would also purge the tokens other tests of the session hold."""
    async for env in _smart(fresh_database_url):
        yield env


async def _smart(database_url: str) -> AsyncIterator[Smart]:
    app = create_app(Settings(database_url=database_url, smart_token_requests_per_minute=100_000))  # type: ignore[call-arg]
    db = open_database(database_url)
    await db.connect()
    app.state.db = db
    # As the server runs: on PostgreSQL the process remembers checked tokens, so every revocation
    # and expiry test here also proves that what it remembers is forgotten in time.
    app.state.live_tokens = await tokens.watch_tokens(db)
    clock = Clock()
    app.state.smart_clock = clock.now
    app.router.routes.append(Route("/test/whoami", _whoami))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        env = Smart(http=http, db=db, clock=clock, org=f"org-{uuid.uuid4().hex[:8]}", app=app)

        async def signed_in(request: Request) -> SignedInUser | None:
            return env.user

        mp = pytest.MonkeyPatch()
        mp.setattr(views, "current_user", signed_in)
        try:
            yield env
        finally:
            mp.undo()
    await tokens.unwatch_tokens(app.state.live_tokens)
    await db.close()
