"""A small organization for the access tests, on each engine, in an organization of its own:

- patients A and B, each with a record (Observation, Condition, Encounter, DocumentReference,
  Communication, MedicationRequest, AllergyIntolerance, Appointment, Device);
- Dr Carter, on A's CareTeam; Dr Diaz, on nobody's; a front-desk clerk; a privacy officer;
- a Location and a Practitioner (directory data);
- the organization's own Organization resource (``organization.fhir_id``), as ``housecall org
  create`` makes it, so that a Consent can name the organization.

``outside`` adds a second organization (decision 0010): Dr Evans and Dr Fox (clinicians), a nurse
without a Practitioner resource and a front-desk clerk, and a patient C of its own with a record
and Dr Evans on C's CareTeam.

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
    org_resource: str = ""  # the organization's Organization resource id

    async def as_(self, who: str, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **self.people[who].auth}
        return await self.http.request(method, url, headers=headers, **kw)

    async def token_for(
        self, kind: ActorKind, *, account_id: str | None, roles: tuple[str, ...] = (), fhir_user: str | None = None,
        patient_id: str | None = None, scopes: tuple[str, ...] = ("user/*.cruds",), org: str | None = None,
    ) -> str:  # fmt: skip
        """A live access token as the authorization server would issue it after a launch."""
        grant = tokens.Grant(
            grant_id=tokens.new_id(), client_id=self.app_client, org_id=org or self.org, account_id=account_id,
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
        org_resource = await _post(http, {
            "resourceType": "Organization", "name": f"Organization {org}",
            "identifier": [{"system": "urn:housecall:organization", "value": org}],
        })  # fmt: skip
        w = World(engine, access_db, org, http, db, patients, records, care_team=care_team,
                  org_resource=org_resource)  # fmt: skip
        async with db.transaction() as conn:
            app_client, _ = await clients.create_client(
                conn, name="Access tests", grant="authorization_code", scopes=["patient/*.cruds", "user/*.cruds"],
                now_us=int(time.time() * 1e6), redirect_uris=["https://app.example.org/cb"],
            )  # fmt: skip
            w.app_client = app_client.client_id
            await conn.execute("UPDATE organization SET fhir_id = $1 WHERE id = $2", org_resource, org)
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


@dataclass
class Outside:
    """A second organization beside ``world``'s, with clinicians a patient there may let in."""

    org: str
    org_resource: str  # its Organization resource: what a Consent names to mean "its clinicians"
    http: httpx.AsyncClient  # its backend service (system/*.cruds)
    practitioners: dict[str, str]  # "evans"/"fox" -> Practitioner id
    patient: str  # its own patient C
    record: list[tuple[str, str]]  # C's record


@pytest.fixture(scope="module")
async def outside(world: World) -> AsyncIterator[Outside]:
    org = f"{world.org}-out"
    settings = Settings(
        database_url=world.url, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1
    )
    async with world.db.transaction() as conn:
        created = await identity.create_organization(conn, org, "Riverside Clinic", settings=settings)
    assert created.fhir_id
    client_id, secret = await provision_backend(world.url, org)
    async with httpx.AsyncClient(transport=world.http._transport, base_url="https://testserver") as http:
        r = await http.post("/oauth/token", **token_request(client_id, secret))  # type: ignore[arg-type]
        http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        practitioners = {
            name: await _post(http, {"resourceType": "Practitioner", "name": [{"family": name.title()}]})
            for name in ("evans", "fox")
        }
        patient = await _post(http, {"resourceType": "Patient", "name": [{"family": "PatientC"}]})
        record = [(res["resourceType"], await _post(http, res)) for res in record_of(patient, "C")]
        await _post(http, {
            "resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
            "participant": [{"member": {"reference": f"Practitioner/{practitioners['evans']}"}}],
        })  # fmt: skip
        async with world.db.transaction() as conn:
            accounts = {
                "evans": await identity.create_account(
                    conn, org, f"evans-{org}@example.org", "clinician", "correct horse battery G",
                    practitioner_id=practitioners["evans"], settings=settings),
                "fox": await identity.create_account(
                    conn, org, f"fox-{org}@example.org", "clinician", "correct horse battery H",
                    practitioner_id=practitioners["fox"], settings=settings),
                "nurse_out": await identity.create_account(
                    conn, org, f"nurse-{org}@example.org", "nurse", "correct horse battery I", settings=settings),
                "desk_out": await identity.create_account(
                    conn, org, f"desk-{org}@example.org", "front_desk", "correct horse battery J", settings=settings),
            }  # fmt: skip
        for name, account in accounts.items():
            world.people[name] = Person(
                name,
                await world.token_for(
                    account.kind, account_id=account.id, roles=tuple(r.value for r in account.roles),
                    fhir_user=account.fhir_user, org=org,
                ),
                account.id,
                account.fhir_user,
            )  # fmt: skip
        yield Outside(org, created.fhir_id, http, practitioners, patient, record)
