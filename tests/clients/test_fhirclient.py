"""The SMART ``fhirclient`` (sync, strict R4 models) against ``housecall serve`` on both engines.

fhirclient parses every body into its typed R4 models and raises on anything that is not valid R4
(a missing required element, a wrong type, an unknown element), so besides the client's own flows
this file feeds a sample of every kind of response body we produce through those models.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models import fhirelementfactory
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient

from housecall.fhir.validation import validate_resource
from tests.support import fixtures_dir

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def base(fhir_base: str) -> str:
    return fhir_base


@pytest.fixture
def smart(base: str, fhir_token: str) -> smart_client.FHIRClient:
    client = smart_client.FHIRClient(settings={"app_id": "housecall-tests", "api_base": base})
    # A backend service's token (the test organization's); fhirclient sends its session's headers.
    client.server.session.headers["Authorization"] = f"Bearer {fhir_token}"
    return client


def strict(body: dict[str, Any]) -> Any:
    """Parse with fhirclient's strict R4 models (raises FHIRValidationError) and our validator."""
    model = fhirelementfactory.FHIRElementFactory.instantiate(body["resourceType"], body)
    assert validate_resource(body) == [], validate_resource(body)[:3]
    return model


def test_prepare_reads_the_capability_statement_strictly(smart: smart_client.FHIRClient, base: str) -> None:
    # prepare() GETs /metadata and builds the CapabilityStatement model (strict). The security
    # section announces SMART on FHIR, so fhirclient finds the OAuth endpoints there and is not
    # ready until it holds a token of its own.
    assert smart.prepare() is False
    server_root = base.removesuffix("/fhir")
    assert smart.authorize_url.startswith(f"{server_root}/oauth/authorize")
    assert smart.server.auth.auth_type == "oauth2"
    cs = smart.server.capabilityStatement
    assert isinstance(cs, CapabilityStatement)
    assert cs.fhirVersion == "4.0.1"
    assert cs.kind == "instance"
    assert cs.implementation.url == base
    types = {r.type for r in cs.rest[0].resource}
    assert {"Patient", "Observation", "Encounter", "Appointment", "Slot"} <= types
    # The same document, fetched by hand, through the model directly.
    raw = requests.get(f"{base}/metadata", timeout=10).json()
    assert CapabilityStatement(raw, strict=True).as_json()["fhirVersion"] == "4.0.1"


def test_create_read_update_delete_with_models(smart: smart_client.FHIRClient, base: str) -> None:
    server = smart.server
    family = f"Smart-{uuid.uuid4().hex[:8]}"
    p = Patient({"name": [{"family": family, "given": ["Sam"]}], "gender": "male", "birthDate": "1970-01-02"})
    created = p.create(server)  # POST; the body comes back (return=representation by default)
    assert created is not None
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"

    q = Patient.read(pid, server)
    assert q.id == pid
    assert q.name[0].family == family
    assert q.birthDate.isostring == "1970-01-02"

    q.gender = "other"
    updated = q.update(server)
    assert updated["meta"]["versionId"] == "2"
    assert Patient.read(pid, server).gender == "other"

    # A resource that refers to it, created from a model too.
    obs = Observation(
        {
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "valueQuantity": {"value": 61, "system": "http://unitsofmeasure.org", "code": "/min"},
        }
    )
    oid = obs.create(server)["id"]
    read_back = Observation.read(oid, server)
    assert read_back.subject.reference == f"Patient/{pid}"
    assert read_back.valueQuantity.value == 61

    q.delete(server)
    with pytest.raises(requests.HTTPError) as info:
        Patient.read(pid, server)
    assert info.value.response.status_code == 410
    strict(info.value.response.json())  # the 410 body is an OperationOutcome


def test_search_and_paging_through_absolute_next_links(smart: smart_client.FHIRClient, base: str) -> None:
    server = smart.server
    family = f"Pager-{uuid.uuid4().hex[:8]}"
    ids = []
    for n in range(11):
        gender = ("male", "female", "other")[n % 3]
        ids.append(Patient({"name": [{"family": family}], "gender": gender}).create(server)["id"])

    found = list(Patient.where(struct={"family": family}).perform_resources_iter(server))
    assert sorted(r.id for r in found) == sorted(ids)
    assert all(isinstance(r, Patient) for r in found)

    # Three per page: fhirclient follows the `next` links, which it requires to be absolute.
    paged = Patient.where(struct={"family": family, "_count": "3"})
    pages = list(paged.perform_iter(server))
    assert len(pages) == 4
    for page in pages:
        for link in page.link:
            assert link.url.startswith(f"{base}/Patient?")
    seen = [e.resource.id for page in pages for e in page.entry]
    assert sorted(seen) == sorted(ids)  # no duplicates, nothing lost
    with pytest.deprecated_call():
        first = paged.perform(server)
    assert isinstance(first, Bundle)
    assert len(first.entry) == 3
    next_url = next(link.url for link in first.link if link.relation == "next")
    second = Bundle.read_from(next_url, server)
    assert {e.resource.id for e in second.entry}.isdisjoint({e.resource.id for e in first.entry})

    # fhirclient's query structures: $or (comma), $and (repeated), $exact, $missing, $type (chaining).
    ors = Patient.where(struct={"family": family, "gender": {"$or": ["male", "other"]}})
    assert len(list(ors.perform_resources_iter(server))) == 7  # n % 3 == 0: 0,3,6,9; == 2: 2,5,8
    exact = Patient.where(struct={"family": {"$exact": family}, "birthdate": {"$missing": "true"}})
    assert len(list(exact.perform_resources_iter(server))) == 11
    lower = Patient.where(struct={"family": {"$exact": family.lower()}})
    assert list(lower.perform_resources_iter(server)) == []
    obs_id = Observation(
        {"status": "final", "code": {"text": "note"}, "subject": {"reference": f"Patient/{ids[0]}"}}
    ).create(server)["id"]
    chained = Observation.where(struct={"subject": {"$type": "Patient", "family": family}})
    assert "subject:Patient.family=" in chained.construct()
    assert [o.id for o in chained.perform_resources_iter(server)] == [obs_id]


def _sample_bodies(base: str, token: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(label, status, body) for one response of each kind the API produces."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    s = requests.Session()
    s.headers.update(FHIR_JSON)
    s.headers["Authorization"] = f"Bearer {token}"

    def grab(label: str, r: requests.Response) -> dict[str, Any]:
        body = r.json()
        out.append((label, r.status_code, body))
        return body

    hl7 = fixtures_dir() / "hl7-r4-examples"
    for name in ("Patient-example.json", "Practitioner-example.json", "Observation-blood-pressure.json",
                 "Observation-f001.json", "Encounter-home.json"):  # fmt: skip
        res = json.loads((hl7 / name).read_bytes())
        grab(f"PUT {name}", s.put(f"{base}/{res['resourceType']}/{res['id']}", data=json.dumps(res)))
    grab("read", s.get(f"{base}/Patient/example"))
    grab("vread", s.get(f"{base}/Patient/example/_history/1"))
    grab("read _elements", s.get(f"{base}/Observation/f001?_elements=subject"))
    grab("read _summary=text", s.get(f"{base}/Observation/f001?_summary=text"))
    q = "code=http://loinc.org|85354-9&_include=Observation:subject&_include=Observation:performer"
    grab("search with _include", s.get(f"{base}/Observation?{q}"))
    grab("search with _revinclude", s.get(f"{base}/Patient?_id=example&_revinclude=Observation:subject"))
    grab("search with an ignored parameter", s.get(f"{base}/Patient?_id=example&not-a-param=1"))
    grab("search _elements", s.get(f"{base}/Observation?_id=f001&_elements=subject"))
    grab("search _summary=text", s.get(f"{base}/Observation?_summary=text&_count=3"))
    grab("search _summary=count", s.get(f"{base}/Observation?_summary=count"))
    grab("search paged", s.get(f"{base}/Patient?_count=1&_total=accurate"))
    grab("$everything", s.get(f"{base}/Patient/example/$everything"))
    # history: create, update, delete one Patient
    pid = grab("create", s.post(f"{base}/Patient", data=json.dumps({"resourceType": "Patient"})))["id"]
    grab("update", s.put(f"{base}/Patient/{pid}", data=json.dumps({"resourceType": "Patient", "id": pid,
                                                                      "active": True})))  # fmt: skip
    assert s.delete(f"{base}/Patient/{pid}").status_code == 204
    grab("instance history with a delete", s.get(f"{base}/Patient/{pid}/_history"))
    grab("type history", s.get(f"{base}/Patient/_history?_count=5"))
    grab("system history", s.get(f"{base}/_history?_count=5"))
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:6f1c1a4e-0f5b-4f2a-9a51-3d8f1f0b2c11",
             "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                          "subject": {"reference": "urn:uuid:6f1c1a4e-0f5b-4f2a-9a51-3d8f1f0b2c11"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Patient", "id": "tx-put", "active": False},
             "request": {"method": "PUT", "url": "Patient/tx-put"}},
            {"request": {"method": "GET", "url": "Patient?_id=example"}},
        ],
    }  # fmt: skip
    grab("transaction-response", s.post(base, data=json.dumps(tx)))
    grab("transaction-response, return=representation",
         s.post(base, data=json.dumps(tx), headers={"Prefer": "return=representation"}))  # fmt: skip
    batch = {
        **tx,
        "type": "batch",
        "entry": [*tx["entry"][2:], {"request": {"method": "GET", "url": "Patient/nope"}}],
    }
    grab("batch-response with an error", s.post(base, data=json.dumps(batch)))
    # OperationOutcomes, one per status
    grab(
        "400 invalid resource", s.post(f"{base}/Patient", data=b'{"resourceType":"Patient","birthDate":"x"}')
    )
    grab("400 bad search", s.get(f"{base}/Patient?birthdate=tomorrow"))
    grab("404 unknown id", s.get(f"{base}/Patient/does-not-exist"))
    grab("404 unknown type", s.get(f"{base}/NotAType/1"))
    grab("404 unknown path", s.get(f"{base}/Patient/a/b/c/d/e"))
    grab("405 method", s.delete(f"{base}/Patient/example/_history/1"))
    grab("410 deleted", s.get(f"{base}/Patient/{pid}"))
    grab("412 If-Match", s.put(f"{base}/Patient/example", data=json.dumps({"resourceType": "Patient", "id": "example"}),
                               headers={"If-Match": 'W/"99"'}))  # fmt: skip
    grab(
        "415 content type",
        s.post(f"{base}/Patient", data=b"<Patient/>", headers={"Content-Type": "text/xml"}),
    )
    grab("422 patch", s.patch(f"{base}/Patient/example", data=b'[{"op":"test","path":"/gender","value":"x"}]',
                              headers={"Content-Type": "application/json-patch+json"}))  # fmt: skip
    grab("$validate", s.post(f"{base}/Patient/$validate", data=json.dumps({"resourceType": "Patient"})))
    return out


def test_every_kind_of_response_body_is_strict_r4(base: str, fhir_token: str) -> None:
    bodies = _sample_bodies(base, fhir_token)
    statuses = {label: status for label, status, _ in bodies}
    for label, status, body in bodies:
        model = strict(body)
        expected = "OperationOutcome" if status >= 400 else None
        if expected:
            assert body["resourceType"] == expected, label
            assert model.issue[0].severity == "error", label
    # the statuses the sample was meant to produce
    assert [statuses[k] for k in ("404 unknown id", "404 unknown type", "404 unknown path", "405 method",
                                  "410 deleted", "412 If-Match", "415 content type", "422 patch")] == [
        404, 404, 404, 405, 410, 412, 415, 422]  # fmt: skip
    assert statuses["400 invalid resource"] == statuses["400 bad search"] == 400
    kinds = {body.get("type") for _, _, body in bodies if body["resourceType"] == "Bundle"}
    assert kinds == {"searchset", "history", "transaction-response", "batch-response"}
