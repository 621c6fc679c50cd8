"""Consent (SECURITY.md row 7; decisions 0009, 0010): a patient's FHIR Consent lets a clinician
outside the care team - of the patient's organization or of another one - read what it names,
while it is active and in its period; withdrawing it takes effect on the next request.

Property-based: random sets of Consents about patient B (of the home organization), naming a
clinician there, the home organization, an outside clinician or the outside organization, some of
them stored in the outside organization's own store (which must grant nothing of B's record),
against an oracle written from the rules alone, through the real API on both engines. Each
observer's reads, patient-pinned searches and whole-type search totals must disclose exactly what
the oracle allows - 0 out-of-scope disclosures - and nothing more once each Consent is revoked
(made inactive, deleted, or its period ended)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.access.conftest import Outside, World

TYPES = ("Observation", "Condition", "Encounter", "Communication")
NOW = dt.datetime.now(dt.UTC)
WHEN = {
    "past": (NOW - dt.timedelta(days=30)).isoformat(),
    "future": (NOW + dt.timedelta(days=30)).isoformat(),
}
# Diaz: a clinician of the home organization on nobody's care team. Evans and Fox: clinicians of
# the outside organization (Evans on its patient C's care team); a nurse there with no Practitioner.
OBSERVERS = ("diaz", "evans", "fox", "nurse_out")
# Whom each provision.actor lets in, as the rules state it: a clinician by their Practitioner, or
# every clinician and nurse of an organization by its Organization resource.
LETS_IN: dict[str | None, frozenset[str]] = {
    "diaz": frozenset({"diaz"}),
    "carter": frozenset({"carter"}),
    "home-org": frozenset({"diaz", "carter"}),
    "evans": frozenset({"evans"}),
    "out-org": frozenset({"evans", "fox", "nurse_out"}),
    None: frozenset(),
}

consent_strategy = st.fixed_dictionaries({
    # Weighted towards Consents that could grant (active, naming an observer, in the patient's own
    # organization), so that the examples reach the period, class and organization rules often.
    "status": st.sampled_from(["active", "active", "active", "inactive", "draft", "rejected"]),
    "type": st.sampled_from(["permit", "permit", "deny", None]),
    "actor": st.sampled_from(["diaz", "evans", "evans", "out-org", "out-org", "home-org", "carter", None]),
    "stored_in": st.sampled_from(["home", "home", "home", "outside"]),
    "start": st.sampled_from([None, "past", "future"]),
    "end": st.sampled_from([None, "past", "future"]),
    "classes": st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
    "revoke": st.sampled_from(["inactive", "delete", "end"]),
})  # fmt: skip


def oracle(consents: list[dict[str, Any]], observer: str, res_type: str) -> bool:
    """Whether ``observer`` may see B's ``res_type``, from the rules as the docs state them."""
    for c in consents:
        if c["status"] != "active" or c["type"] == "deny" or observer not in LETS_IN[c["actor"]]:
            continue
        if c["stored_in"] != "home":  # only the patient's own organization's Consents count
            continue
        if c["start"] == "future" or c["end"] == "past":
            continue
        if c["classes"] and res_type not in c["classes"]:
            continue
        return True
    return False


def actor_reference(w: World, out: Outside, actor: str) -> str:
    if actor == "home-org":
        return f"Organization/{w.org_resource}"
    if actor == "out-org":
        return f"Organization/{out.org_resource}"
    if actor == "evans":
        return f"Practitioner/{out.practitioners['evans']}"
    return str(w.people[actor].fhir_user)


def consent_resource(w: World, out: Outside, c: dict[str, Any]) -> dict[str, Any]:
    provision: dict[str, Any] = {}
    if c["type"]:
        provision["type"] = c["type"]
    if c["actor"]:
        provision["actor"] = [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": actor_reference(w, out, c["actor"])},
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


async def _total(w: World, observer: str, res_type: str) -> int:
    r = await w.as_(observer, "GET", f"/fhir/{res_type}?_total=accurate&_count=0")
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


async def _sees(w: World, observer: str, res_type: str, baseline: int) -> bool:
    """Whether ``observer`` sees B's ``res_type``: by id, by a search naming B, and in the count of
    a search over the whole type (which must not grow by anything else)."""
    res_id = dict(w.records["B"])[res_type]
    read = (await w.as_(observer, "GET", f"/fhir/{res_type}/{res_id}")).status_code
    search = await w.as_(observer, "GET", f"/fhir/{res_type}?subject=Patient/{w.patients['B']}")
    assert read in (200, 404) and search.status_code in (200, 404), (observer, read, search.text)
    found = search.status_code == 200 and len(search.json().get("entry", [])) == 1
    assert (read == 200) == found, (observer, res_type, read, search.status_code)
    assert await _total(w, observer, res_type) == baseline + (read == 200), (observer, res_type)
    return read == 200


_BASELINE: dict[str, dict[tuple[str, str], int]] = {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(consents=st.lists(consent_strategy, max_size=3))
async def test_consents_disclose_exactly_what_they_grant(
    world: World, outside: Outside, consents: list[dict[str, Any]]
) -> None:
    if world.org not in _BASELINE:  # what each observer sees of each type with no Consent at all
        _BASELINE[world.org] = {(o, t): await _total(world, o, t) for o in OBSERVERS for t in TYPES}
    baseline = _BASELINE[world.org]
    stores = {"home": world.http, "outside": outside.http}
    ids = []
    for c in consents:
        r = await stores[c["stored_in"]].post("/fhir/Consent", json=consent_resource(world, outside, c))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    try:
        for observer in OBSERVERS:
            disclosed = {t for t in TYPES if await _sees(world, observer, t, baseline[(observer, t)])}
            assert disclosed == {t for t in TYPES if oracle(consents, observer, t)}, (observer, consents)
    finally:
        # Withdrawing: marked inactive (kept as the record of what was agreed), deleted, or ended
        # now; effective at once.
        for c, res_id in zip(consents, ids, strict=True):
            http = stores[c["stored_in"]]
            if c["revoke"] == "delete":
                assert (await http.delete(f"/fhir/Consent/{res_id}")).status_code == 204
                continue
            current = (await http.get(f"/fhir/Consent/{res_id}")).json()
            current.pop("meta")
            if c["revoke"] == "inactive":
                current["status"] = "inactive"
            else:
                provision = current.setdefault("provision", {})
                provision["period"] = {**provision.get("period", {}), "end": WHEN["past"]}
                provision["period"].pop("start", None)
            r = await http.put(f"/fhir/Consent/{res_id}", json=current)
            assert r.status_code == 200, r.text
    for observer in OBSERVERS:
        assert not [t for t in TYPES if await _sees(world, observer, t, baseline[(observer, t)])], (
            f"a withdrawn Consent still discloses to {observer}"
        )
