"""No cross-patient access (SECURITY.md rows 2-4): patient A's token, and clinicians without a care
relationship to B, against patient B's ids in the path, the query, the body, Bundle references,
``_include``/``_revinclude`` and message/attachment resources, for every FHIR interaction.

The attempts are generated from the API's own route table (``fhir.api._BY_SHAPE``) and the
resource types of B's record, so a new interaction cannot escape: a shape the generator does not
know fails ``test_every_route_shape_is_covered``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from housecall.fhir import api
from tests.access.conftest import FHIR, RECORD_TYPES, World

ATTACKERS = ("patientA", "diaz")
# Text found only in B's record (the fixtures tag B's resources): none of it may reach an attacker.
B_MARKERS = ("PatientB", "heart rate B", "asthma B", "message for B", "cuff B")


@dataclass
class Attempt:
    shape: tuple[str, str]
    method: str
    url: str
    body: Any = None
    form: dict[str, str] | None = None
    # What a refusal looks like: 404 everywhere a patient's data is named; "empty" for a search that
    # names no patient (an empty searchset is what an unknown id gives); "204" for DELETE, answered
    # as for an unknown id (nothing is deleted: checked afterwards); "entries-404" for a batch.
    # Everywhere, 403 is also a refusal when it is the role's answer for the type whatever the id
    # ("this sign-in may not delete Encounter resources"): it says nothing about B.
    refused: str = "404"


def _b_resources(w: World) -> list[tuple[str, str]]:
    return [("Patient", w.patients["B"]), *w.records["B"]]


async def _current(w: World, res_type: str, res_id: str) -> dict[str, Any]:
    r = await w.http.get(f"/fhir/{res_type}/{res_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _reference_param(res_type: str) -> str:
    return {"AllergyIntolerance": "patient", "Appointment": "patient", "Device": "patient"}.get(
        res_type, "subject"
    )


async def attempts(w: World) -> list[Attempt]:
    b_patient = w.patients["B"]
    out: list[Attempt] = []
    for res_type, res_id in _b_resources(w):
        body = await _current(w, res_type, res_id)
        changed = {**{k: v for k, v in body.items() if k != "meta"}, "language": "en"}
        out += [
            Attempt(("GET", "T/I"), "GET", f"/fhir/{res_type}/{res_id}"),
            Attempt(("GET", "T/I/_history"), "GET", f"/fhir/{res_type}/{res_id}/_history"),
            Attempt(("GET", "T/I/_history/V"), "GET", f"/fhir/{res_type}/{res_id}/_history/1"),
            Attempt(("PUT", "T/I"), "PUT", f"/fhir/{res_type}/{res_id}", body=changed),
            Attempt(
                ("PATCH", "T/I"),
                "PATCH",
                f"/fhir/{res_type}/{res_id}",
                body=[{"op": "add", "path": "/language", "value": "en"}],
            ),
            Attempt(("DELETE", "T/I"), "DELETE", f"/fhir/{res_type}/{res_id}", refused="204"),
            Attempt(("GET", "T"), "GET", f"/fhir/{res_type}?_id={res_id}", refused="empty"),
            Attempt(
                ("POST", "T/_search"),
                "POST",
                f"/fhir/{res_type}/_search",
                form={"_id": res_id},
                refused="empty",
            ),
        ]
        if res_type == "Patient":
            out.append(Attempt(("GET", "T/I/$everything"), "GET", f"/fhir/Patient/{res_id}/$everything"))
            out.append(Attempt(("GET", "T"), "GET", f"/fhir/Patient?_id={res_id}&_revinclude=Observation:subject",
                               refused="empty"))  # fmt: skip
            continue
        ref = _reference_param(res_type)
        fresh = {k: v for k, v in body.items() if k not in ("id", "meta")}
        out += [
            Attempt(("GET", "T"), "GET", f"/fhir/{res_type}?{ref}=Patient/{b_patient}"),
            Attempt(("GET", "T"), "GET", f"/fhir/{res_type}?{ref}={b_patient}"),
            Attempt(
                ("POST", "T/_search"), "POST", f"/fhir/{res_type}/_search", form={ref: f"Patient/{b_patient}"}
            ),
            # A new resource in B's record: in the body...
            Attempt(("POST", "T"), "POST", f"/fhir/{res_type}", body=fresh),
            # ... as a conditional update and a conditional delete naming B ...
            Attempt(("PUT", "T"), "PUT", f"/fhir/{res_type}?{ref}=Patient/{b_patient}", body=fresh),
            Attempt(("DELETE", "T"), "DELETE", f"/fhir/{res_type}?{ref}=Patient/{b_patient}"),
            # ... and through Bundles: a transaction writing into B's record, a batch reading it.
            Attempt(
                ("POST", ""),
                "POST",
                "/fhir",
                body={
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "fullUrl": "urn:uuid:0b6f3f0e-4a8e-4b43-9d51-0a1f2e3d4c5b",
                            "resource": fresh,
                            "request": {"method": "POST", "url": res_type},
                        }
                    ],
                },
            ),
            Attempt(
                ("POST", ""),
                "POST",
                "/fhir",
                body={
                    "resourceType": "Bundle",
                    "type": "batch",
                    "entry": [
                        {"request": {"method": "GET", "url": f"{res_type}/{res_id}"}},
                        {"request": {"method": "GET", "url": f"{res_type}?{ref}=Patient/{b_patient}"}},
                    ],
                },
                refused="entries-404",
            ),
        ]
    return out


# Shapes that carry no patient's data: the public CapabilityStatement, validation of the body sent
# (nothing stored is read), and whole-type/system history (refused with 403 to anyone without
# organization-wide access: test_history_needs_organization_wide_access).
NOT_PATIENT_BOUND = {("GET", "metadata"), ("POST", "T/$validate"), ("POST", "T/I/$validate"),
                     ("GET", "_history"), ("GET", "T/_history")}  # fmt: skip


async def test_every_route_shape_is_covered(world: World) -> None:
    covered = {a.shape for a in await attempts(world)} | NOT_PATIENT_BOUND
    assert set(api._BY_SHAPE) - covered == set(), "a FHIR route shape without cross-patient attempts"


def _refused(attempt: Attempt, status: int, body: bytes) -> bool:
    if status == 403 and b"this sign-in may not" in body:
        return True
    if attempt.refused == "404":
        return status == 404 and json.loads(body)["resourceType"] == "OperationOutcome"
    if attempt.refused == "204":
        return status == 204
    doc = json.loads(body)
    if attempt.refused == "empty":
        return status == 200 and not doc.get("entry") and doc.get("total", 0) == 0
    assert attempt.refused == "entries-404"
    return status == 200 and all(e["response"]["status"].startswith("404") for e in doc["entry"])


@pytest.mark.parametrize("attacker", ATTACKERS)
async def test_no_cross_patient_access(world: World, attacker: str) -> None:
    tried = await attempts(world)
    before = {key: await _current(world, *key) for key in _b_resources(world)}
    succeeded: list[str] = []
    for a in tried:
        kw: dict[str, Any] = {}
        if a.form is not None:
            kw["data"] = a.form
        elif a.body is not None:
            ctype = "application/json-patch+json" if a.method == "PATCH" else FHIR["Content-Type"]
            kw["content"] = json.dumps(a.body)
            kw["headers"] = {"Content-Type": ctype}
        r = await world.as_(attacker, a.method, a.url, **kw)
        if not _refused(a, r.status_code, r.content) or any(m in r.text for m in B_MARKERS):
            succeeded.append(f"{a.method} {a.url} -> {r.status_code} {r.text[:160]}")
    # Nothing of B's changed, and nothing new landed in B's record.
    after = {key: await _current(world, *key) for key in _b_resources(world)}
    assert after == before
    for res_type in RECORD_TYPES:
        ref = _reference_param(res_type)
        r = await world.http.get(f"/fhir/{res_type}?{ref}=Patient/{world.patients['B']}&_summary=count")
        assert r.json()["total"] == 1, f"a {res_type} was written into B's record"
    shapes = {a.shape for a in tried}
    print(f"\n{attacker}: {len(tried)} attempts over {len(shapes)} route shapes, {len(succeeded)} succeeded")
    assert not succeeded, "\n".join(succeeded)


async def test_include_never_pulls_in_another_patients_record(world: World) -> None:
    """A's own Observation may name B (as performer); searching A's record with _include must not
    bring B's Patient resource along."""
    a, b = world.patients["A"], world.patients["B"]
    r = await world.http.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "seen with"},
        "subject": {"reference": f"Patient/{a}"}, "performer": [{"reference": f"Patient/{b}"}],
    })  # fmt: skip
    assert r.status_code == 201
    shared = r.json()["id"]
    try:
        r = await world.as_("patientA", "GET", f"/fhir/Observation?subject=Patient/{a}&_include=Observation:performer"
                            "&_include=Observation:subject")  # fmt: skip
        assert r.status_code == 200
        got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json()["entry"]}
        assert ("Patient", a) in got and ("Observation", shared) in got
        assert ("Patient", b) not in got
    finally:
        await world.http.delete(f"/fhir/Observation/{shared}")


async def test_a_patient_sees_their_own_record(world: World) -> None:
    a = world.patients["A"]
    for res_type, res_id in world.records["A"]:
        r = await world.as_("patientA", "GET", f"/fhir/{res_type}/{res_id}")
        assert r.status_code == 200, (res_type, r.text)
    r = await world.as_("patientA", "GET", f"/fhir/Patient/{a}/$everything")
    assert r.status_code == 200
    types = {e["resource"]["resourceType"] for e in r.json()["entry"]}
    assert types == {"Patient", "CareTeam", *RECORD_TYPES}
    # A search with no patient named returns A's own record only, and the total counts only that.
    r = await world.as_("patientA", "GET", "/fhir/Observation?code=http://loinc.org|8867-4&_total=accurate")
    assert r.json()["total"] == 1
    assert {e["resource"]["subject"]["reference"] for e in r.json()["entry"]} == {f"Patient/{a}"}
