"""Consent (SECURITY.md row 7): a patient's FHIR Consent lets a clinician outside the care team see
what it names, while it is active and in its period; withdrawing it takes effect on the next
request. Property-based: random sets of Consents against an oracle written from the rules alone,
through the real API on both engines."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.access.conftest import World

TYPES = ("Observation", "Condition", "Encounter", "Communication")
NOW = dt.datetime.now(dt.UTC)
WHEN = {
    "past": (NOW - dt.timedelta(days=30)).isoformat(),
    "future": (NOW + dt.timedelta(days=30)).isoformat(),
}

consent_strategy = st.fixed_dictionaries({
    # Weighted towards Consents that could grant (active, naming Dr Diaz), so that the examples
    # reach the period and class rules often.
    "status": st.sampled_from(["active", "active", "active", "inactive", "draft", "rejected"]),
    "type": st.sampled_from(["permit", "permit", "deny", None]),
    "actor": st.sampled_from(["diaz", "diaz", "diaz", "carter", None]),
    "start": st.sampled_from([None, "past", "future"]),
    "end": st.sampled_from([None, "past", "future"]),
    "classes": st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
})  # fmt: skip


def oracle(consents: list[dict[str, Any]], res_type: str) -> bool:
    """Whether Dr Diaz may see B's ``res_type``, from the rules as the docs state them."""
    for c in consents:
        if c["status"] != "active" or c["type"] == "deny" or c["actor"] != "diaz":
            continue
        if c["start"] == "future" or c["end"] == "past":
            continue
        if c["classes"] and res_type not in c["classes"]:
            continue
        return True
    return False


def consent_resource(w: World, c: dict[str, Any]) -> dict[str, Any]:
    provision: dict[str, Any] = {}
    if c["type"]:
        provision["type"] = c["type"]
    if c["actor"]:
        provision["actor"] = [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": w.people[c["actor"]].fhir_user},
        }]  # fmt: skip
    period = {k: WHEN[c[k]] for k in ("start", "end") if c[k]}
    if period:
        provision["period"] = period
    if c["classes"]:
        provision["class"] = [
            {"system": "http://hl7.org/fhir/resource-types", "code": t} for t in c["classes"]
        ]
    consent = {
        "resourceType": "Consent", "status": c["status"],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{w.patients['B']}"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
    }  # fmt: skip
    if provision:
        consent["provision"] = provision
    return consent


async def _diaz_sees(w: World, res_type: str) -> bool:
    res_id = dict(w.records["B"])[res_type]
    read = (await w.as_("diaz", "GET", f"/fhir/{res_type}/{res_id}")).status_code
    search = await w.as_("diaz", "GET", f"/fhir/{res_type}?subject=Patient/{w.patients['B']}")
    assert read in (200, 404) and search.status_code in (200, 404)
    found = search.status_code == 200 and len(search.json().get("entry", [])) == 1
    assert (read == 200) == found, (res_type, read, search.status_code)
    return read == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(consents=st.lists(consent_strategy, max_size=3))
async def test_consents_disclose_exactly_what_they_grant(
    world: World, consents: list[dict[str, Any]]
) -> None:
    ids = []
    for c in consents:
        r = await world.http.post("/fhir/Consent", json=consent_resource(world, c))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    try:
        disclosed = {t for t in TYPES if await _diaz_sees(world, t)}
        assert disclosed == {t for t in TYPES if oracle(consents, t)}, consents
    finally:
        # Withdrawing: marked inactive (kept as the record of what was agreed), effective at once.
        for res_id in ids:
            current = (await world.http.get(f"/fhir/Consent/{res_id}")).json()
            current.pop("meta")
            r = await world.http.put(f"/fhir/Consent/{res_id}", json={**current, "status": "inactive"})
            assert r.status_code == 200
    assert not [t for t in TYPES if await _diaz_sees(world, t)], "a withdrawn Consent still discloses"
