"""Who sees what by role and relationship, writes scoped to the owner, protected elements, and
the answer without credentials (SECURITY.md rows 3-6)."""

from __future__ import annotations

import httpx

from tests.access.conftest import FHIR, World


async def _status(w: World, who: str, method: str, url: str, **kw: object) -> int:
    return (await w.as_(who, method, url, **kw)).status_code


async def test_care_relationship_decides_what_a_clinician_sees(world: World) -> None:
    for res_type, res_id in world.records["A"]:
        assert await _status(world, "carter", "GET", f"/fhir/{res_type}/{res_id}") == 200, res_type
        assert await _status(world, "diaz", "GET", f"/fhir/{res_type}/{res_id}") == 404, res_type
    for res_type, res_id in world.records["B"]:
        assert await _status(world, "carter", "GET", f"/fhir/{res_type}/{res_id}") == 404, res_type
    # A search without a patient returns only the patients of the clinician's care teams.
    r = await world.as_("carter", "GET", "/fhir/Condition?_total=accurate")
    assert {e["resource"]["subject"]["reference"] for e in r.json()["entry"]} == {
        f"Patient/{world.patients['A']}"
    }
    assert r.json()["total"] == 1
    # Directory data is the whole organization's.
    assert (await world.as_("diaz", "GET", "/fhir/Location")).json()["total"] >= 1


async def test_ending_the_care_team_ends_access_on_the_next_request(world: World) -> None:
    obs = dict(world.records["A"])["Observation"]
    team = (await world.http.get(f"/fhir/CareTeam/{world.care_team}")).json()
    try:
        r = await world.http.put(f"/fhir/CareTeam/{world.care_team}", json={**team, "status": "inactive"})
        assert r.status_code == 200
        assert await _status(world, "carter", "GET", f"/fhir/Observation/{obs}") == 404
    finally:
        team.pop("meta")
        await world.http.put(f"/fhir/CareTeam/{world.care_team}", json={**team, "status": "active"})
    assert await _status(world, "carter", "GET", f"/fhir/Observation/{obs}") == 200


async def test_front_desk_works_administrative_data_only(world: World) -> None:
    records = dict(world.records["B"])
    assert await _status(world, "desk", "GET", f"/fhir/Patient/{world.patients['B']}") == 200
    assert await _status(world, "desk", "GET", f"/fhir/Appointment/{records['Appointment']}") == 200
    for clinical in ("Observation", "Condition", "Communication", "DocumentReference"):
        assert await _status(world, "desk", "GET", f"/fhir/{clinical}/{records[clinical]}") == 404, clinical
    r = await world.as_("desk", "GET", "/fhir/Appointment?_total=accurate")
    assert r.json()["total"] >= 2  # every patient's appointments
    assert await _status(world, "desk", "GET", "/fhir/Observation") == 403


async def test_writes_stay_in_the_patients_own_record(world: World) -> None:
    a, b = world.patients["A"], world.patients["B"]
    reading = {"resourceType": "Observation", "status": "final", "code": {"text": "home weight"},
               "subject": {"reference": f"Patient/{a}"}, "valueQuantity": {"value": 70, "unit": "kg"}}  # fmt: skip
    r = await world.as_("patientA", "POST", "/fhir/Observation", json=reading)
    assert r.status_code == 201, r.text
    mine = r.json()
    # A PUT cannot move it to another patient, even one the writer may see (row 4).
    moved = {**mine, "subject": {"reference": f"Patient/{b}"}}
    r = await world.as_("patientA", "PUT", f"/fhir/Observation/{mine['id']}", json=moved)
    assert r.status_code in (404, 422)
    # Without a patient the write has no owner: refused for a patient.
    orphan = {k: v for k, v in reading.items() if k != "subject"}
    assert await _status(world, "patientA", "POST", "/fhir/Observation", json=orphan) == 403
    # A clinician of A's care team may write into A's record, not into B's.
    r = await world.as_("carter", "POST", "/fhir/Observation", json=reading)
    assert r.status_code == 201
    b_reading = {**reading, "subject": {"reference": f"Patient/{b}"}}
    assert await _status(world, "carter", "POST", "/fhir/Observation", json=b_reading) == 404


async def test_patients_cannot_write_protected_elements(world: World) -> None:
    """Mass assignment (row 5): security labels, links between records, who manages the record."""
    a = world.patients["A"]
    me = (await world.as_("patientA", "GET", f"/fhir/Patient/{a}")).json()
    attempts = {
        "meta.security": {**me, "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}},
        "link": {**me, "link": [{"other": {"reference": f"Patient/{world.patients['B']}"}, "type": "seealso"}]},
        "managingOrganization": {**me, "managingOrganization": {"reference": "Organization/elsewhere"}},
        "generalPractitioner": {**me, "generalPractitioner": [{"reference": "Practitioner/anyone"}]},
    }  # fmt: skip
    for element, body in attempts.items():
        r = await world.as_("patientA", "PUT", f"/fhir/Patient/{a}", json=body)
        assert r.status_code == 403, (element, r.text)
        assert r.json()["issue"][0]["expression"] == [f"Patient.{element}"]
    # What is theirs to say they may change.
    r = await world.as_(
        "patientA",
        "PUT",
        f"/fhir/Patient/{a}",
        json={**me, "telecom": [{"system": "phone", "value": "555-0100"}]},
    )
    assert r.status_code == 200, r.text
    assert (await world.http.get(f"/fhir/Patient/{a}")).json()["telecom"][0]["value"] == "555-0100"


async def test_history_needs_organization_wide_access(world: World) -> None:
    for who in ("patientA", "carter"):
        assert await _status(world, who, "GET", "/fhir/Observation/_history") == 403
        assert await _status(world, who, "GET", "/fhir/_history") == 403
    assert (await world.http.get("/fhir/Observation/_history")).status_code == 200


async def _anonymous_events(world: World) -> int:
    async with world.db.reader() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM audit_log WHERE org_id = ''"))


async def test_no_credentials_is_401_and_a_bad_token_too(world: World) -> None:
    before = await _anonymous_events(world)
    transport = world.http._transport
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as anonymous:
        for method, url in (("GET", f"/fhir/Patient/{world.patients['A']}"), ("GET", "/fhir/Observation"),
                            ("POST", "/fhir/Observation"), ("POST", "/fhir"), ("GET", "/fhir/_history")):  # fmt: skip
            r = await anonymous.request(method, url, content=b"{}", headers=FHIR)
            assert r.status_code == 401, (method, url)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["resourceType"] == "OperationOutcome"
        r = await anonymous.get("/fhir/Observation", headers={"Authorization": "Bearer hca_not-a-token"})
        assert r.status_code == 401
        assert (await anonymous.get("/fhir/metadata")).status_code == 200  # public by design
    # Every refusal is on the record, with the network address as its only agent (row 10).
    assert await _anonymous_events(world) - before == 6
