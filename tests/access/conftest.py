"""A small organization for the access tests, on each engine, in an organization of its own:

- patients A and B, each with a record (Observation, Condition, Encounter, DocumentReference,
  Communication, MedicationRequest, AllergyIntolerance, Appointment, Device);
- Dr Carter, on A's CareTeam; Dr Diaz, on nobody's; a front-desk clerk; a privacy officer;
- a Location and a Practitioner (directory data).

Every person is a real account (identity) holding a real access token (SMART grant and token
tables, looked up by the API exactly as an app's token is).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from housecall.access.actor import ActorKind
from housecall.app import create_app
from housecall.core.db import Database, open_database
from housecall.core.settings import Settings
from housecall.identity import service as identity
from housecall.smart import clients, tokens

# Identity's fixtures (an organization with a real SMTP server, signed-in browsers, the clock).
from tests.identity.conftest import _clock_back, env, smtp  # noqa: F401
from tests.support import drop_database, new_database, provision_backend, token_request

FHIR = {"Content-Type": "application/fhir+json"}
RECORD_TYPES = (
    "Observation", "Condition", "Encounter", "DocumentReference", "Communication", "MedicationRequest",
    "AllergyIntolerance", "Appointment", "Device",
)  # fmt: skip


def record_of(patient_id: str, tag: str) -> list[dict[str, Any]]:
    """One resource of each RECORD_TYPES kind in ``patient_id``'s compartment."""
    subject = {"reference": f"Patient/{patient_id}"}
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": f"heart rate {tag}"}
    return [
        {"resourceType": "Observation", "status": "final", "code": code, "subject": subject,
         "valueQuantity": {"value": 72, "unit": "/min"}},
        {"resourceType": "Condition", "subject": subject, "code": {"text": f"asthma {tag}"}},
        {"resourceType": "Encounter", "status": "finished", "class": {"code": "VR"}, "subject": subject},
        {"resourceType": "DocumentReference", "status": "current", "subject": subject,
         "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}]},
        {"resourceType": "Communication", "status": "completed", "subject": subject,
         "payload": [{"contentString": f"message for {tag}"}]},
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": subject,
         "medicationCodeableConcept": {"text": "salbutamol"}},
        {"resourceType": "AllergyIntolerance", "patient": subject, "code": {"text": "peanut"}},
        {"resourceType": "Appointment", "status": "booked",
         "participant": [{"actor": subject, "status": "accepted"}]},
        {"resourceType": "Device", "patient": subject, "deviceName": [{"name": f"cuff {tag}", "type": "user-friendly-name"}]},
    ]  # fmt: skip


@dataclass
class Person:
    name: str
    token: str
    account_id: str | None = None
    fhir_user: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    engine: str
    url: str
    org: str
    http: httpx.AsyncClient  # signed in as a backend service with system/*.cruds
    db: Database
    patients: dict[str, str]  # "A"/"B" -> Patient id
    records: dict[str, list[tuple[str, str]]]  # "A"/"B" -> [(type, id)]
    people: dict[str, Person] = field(default_factory=dict)
    care_team: str = ""
    app_client: str = ""

    async def as_(self, who: str, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **self.people[who].auth}
        return await self.http.request(method, url, headers=headers, **kw)

    async def token_for(
        self, kind: ActorKind, *, account_id: str | None, roles: tuple[str, ...] = (), fhir_user: str | None = None,
        patient_id: str | None = None, scopes: tuple[str, ...] = ("user/*.cruds",),
    ) -> str:  # fmt: skip
        """A live access token as the authorization server would issue it after a launch."""
        grant = tokens.Grant(
            grant_id=tokens.new_id(), client_id=self.app_client, org_id=self.org, account_id=account_id,
            actor_kind=kind.value, roles=roles, fhir_user=fhir_user, patient_id=patient_id, scopes=scopes,
            aud="https://testserver/fhir",
        )  # fmt: skip
        now = int(time.time() * 1e6)
        async with self.db.transaction() as conn:
            await tokens.create_grant(conn, grant, now)
            return (await tokens.issue_tokens(conn, grant, scopes, now)).access_token


@pytest.fixture(scope="module")
def access_db(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = new_database(engine, Path(tmp_path_factory.mktemp(f"access-{engine}")))
    yield url
    drop_database(url)


async def _post(http: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    r = await http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
async def world(engine: str, access_db: str) -> AsyncIterator[World]:
    org = f"acc-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=access_db, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1
    )
    app = create_app(settings)
    db = open_database(access_db)
    await db.connect()
    app.state.db = db
    client_id, secret = await provision_backend(access_db, org)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        r = await http.post("/oauth/token", **token_request(client_id, secret))  # type: ignore[arg-type]
        http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        patients = {
            k: await _post(http, {"resourceType": "Patient", "name": [{"family": f"Patient{k}"}]})
            for k in "AB"
        }
        records: dict[str, list[tuple[str, str]]] = {}
        for k, pid in patients.items():
            records[k] = [(res["resourceType"], await _post(http, res)) for res in record_of(pid, k)]
        carter = await _post(http, {"resourceType": "Practitioner", "name": [{"family": "Carter"}]})
        diaz = await _post(http, {"resourceType": "Practitioner", "name": [{"family": "Diaz"}]})
        care_team = await _post(http, {
            "resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patients['A']}"},
            "participant": [{"member": {"reference": f"Practitioner/{carter}"}}],
        })  # fmt: skip
        await _post(http, {"resourceType": "Location", "name": "Main street clinic"})
        w = World(engine, access_db, org, http, db, patients, records, care_team=care_team)
        async with db.transaction() as conn:
            app_client, _ = await clients.create_client(
                conn, name="Access tests", grant="authorization_code", scopes=["patient/*.cruds", "user/*.cruds"],
                now_us=int(time.time() * 1e6), redirect_uris=["https://app.example.org/cb"],
            )  # fmt: skip
            w.app_client = app_client.client_id
            accounts = {
                "patientA": await identity.create_account(
                    conn, org, f"a-{org}@example.org", "patient", "correct horse battery A",
                    patient_id=patients["A"], settings=settings),
                "patientB": await identity.create_account(
                    conn, org, f"b-{org}@example.org", "patient", "correct horse battery B",
                    patient_id=patients["B"], settings=settings),
                "carter": await identity.create_account(
                    conn, org, f"carter-{org}@example.org", "clinician", "correct horse battery C",
                    practitioner_id=carter, settings=settings),
                "diaz": await identity.create_account(
                    conn, org, f"diaz-{org}@example.org", "clinician", "correct horse battery D",
                    practitioner_id=diaz, settings=settings),
                "desk": await identity.create_account(
                    conn, org, f"desk-{org}@example.org", "front_desk", "correct horse battery E", settings=settings),
                "privacy": await identity.create_account(
                    conn, org, f"privacy-{org}@example.org", "privacy_officer", "correct horse battery F",
                    settings=settings),
            }  # fmt: skip
        for name, account in accounts.items():
            patient_id = account.patient_id
            w.people[name] = Person(
                name,
                await w.token_for(
                    account.kind, account_id=account.id, roles=tuple(r.value for r in account.roles),
                    fhir_user=account.fhir_user, patient_id=patient_id,
                    scopes=("patient/*.cruds",) if patient_id else ("user/*.cruds",),
                ),
                account.id,
                account.fhir_user,
            )  # fmt: skip
        yield w
    await db.close()
