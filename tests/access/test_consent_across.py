"""Consent across organizations (decision 0010): patient B of the home organization lets in Dr Evans
of the outside organization (or all its clinicians) for some types of their record. What Evans
reads, searches and pages through is exactly that; revoking is effective on the next request; only
the patient's organization's Consents count; nothing is written across; and the patient sees the
outside clinician in "who looked at my record"."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from housecall.audit.trail import who_viewed
from housecall.identity.clock import clock
from tests.access.conftest import FHIR, Outside, World

pytestmark = pytest.mark.timeout(120)


def consent(patient: str, actor: str, classes: tuple[str, ...] = (), **period: str) -> dict[str, Any]:
    role = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]
    }
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [{"role": role, "reference": {"reference": actor}}],
    }
    if classes:
        provision["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": t} for t in classes]
    if period:
        provision["period"] = period
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"}, "provision": provision,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
    }  # fmt: skip


async def grant(
    http: httpx.AsyncClient, resource: dict[str, Any], headers: dict[str, str] | None = None
) -> str:
    r = await http.post("/fhir/Consent", json=resource, headers={**FHIR, **(headers or {})})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
async def evans_for_b(world: World, outside: Outside) -> AsyncIterator[str]:
    """B's Consent naming Dr Evans for B's Patient, Observation and Condition; deleted afterwards."""
    evans = f"Practitioner/{outside.practitioners['evans']}"
    consent_id = await grant(
        world.http, consent(world.patients["B"], evans, ("Patient", "Observation", "Condition"))
    )
    yield consent_id
    await world.http.delete(f"/fhir/Consent/{consent_id}")


def ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if mode is None or e["search"]["mode"] == mode
    }


async def test_an_outside_clinician_reads_the_granted_types_only(
    world: World, outside: Outside, evans_for_b: str
) -> None:
    b, a = world.patients["B"], world.patients["A"]
    granted = {"Observation", "Condition"}
    for res_type, res_id in world.records["B"]:
        r = await world.as_("evans", "GET", f"/fhir/{res_type}/{res_id}")
        assert r.status_code == (200 if res_type in granted else 404), (res_type, r.text)
        history = await world.as_("evans", "GET", f"/fhir/{res_type}/{res_id}/_history")
        assert history.status_code == (200 if res_type in granted else 404), res_type
        vread = await world.as_("evans", "GET", f"/fhir/{res_type}/{res_id}/_history/1")
        assert vread.status_code == (200 if res_type in granted else 404), res_type
    for res_type, res_id in world.records["A"]:  # another patient of the same organization
        assert (await world.as_("evans", "GET", f"/fhir/{res_type}/{res_id}")).status_code == 404
    assert (await world.as_("evans", "GET", f"/fhir/Patient/{b}")).status_code == 200
    assert (await world.as_("evans", "GET", f"/fhir/Patient/{a}")).status_code == 404
    assert (await world.as_("evans", "GET", f"/fhir/Consent/{evans_for_b}")).status_code == 404
    # Directory data of the home organization stays its own.
    assert (
        await world.as_("evans", "GET", f"/fhir/Practitioner/{world.people['diaz'].fhir_user}")
    ).status_code == 404
    r = await world.as_("evans", "GET", "/fhir/Location?_total=accurate")
    assert r.json()["total"] == 0

    # $everything: the granted types of B's record, nothing of A's.
    everything = (await world.as_("evans", "GET", f"/fhir/Patient/{b}/$everything")).json()
    assert {ref.split("/")[0] for ref in ids(everything)} == {"Patient", "Observation", "Condition"}
    assert (await world.as_("evans", "GET", f"/fhir/Patient/{a}/$everything")).status_code == 404

    # _include and _revinclude keep to the grant too.
    observation = dict(world.records["B"])["Observation"]
    r = await world.as_("evans", "GET", f"/fhir/Observation?subject=Patient/{b}&_include=Observation:subject")
    assert ids(r.json(), "match") == {f"Observation/{observation}"}
    assert ids(r.json(), "include") == {f"Patient/{b}"}
    r = await world.as_(
        "evans", "GET",
        f"/fhir/Patient?_id={b}&_revinclude=Observation:subject&_revinclude=Encounter:subject"
        "&_revinclude=Consent:patient",
    )  # fmt: skip
    assert ids(r.json(), "match") == {f"Patient/{b}"}
    assert ids(r.json(), "include") == {f"Observation/{observation}"}
    # A search naming a patient not granted answers as that patient's read would.
    assert (await world.as_("evans", "GET", f"/fhir/Observation?subject=Patient/{a}")).status_code == 404
    assert (await world.as_("evans", "GET", f"/fhir/Encounter?subject=Patient/{b}")).status_code == 404
    # Type history is the organization's own, as before.
    assert (await world.as_("evans", "GET", "/fhir/Observation/_history")).status_code == 403

    # Named alone, Evans is the only one let in: not his colleagues, not his organization's apps.
    for who in ("fox", "nurse_out", "desk_out"):
        assert (await world.as_(who, "GET", f"/fhir/Observation/{observation}")).status_code == 404, who
    assert (await outside.http.get(f"/fhir/Observation/{observation}")).status_code == 404
    assert (await outside.http.get(f"/fhir/Patient/{b}")).status_code == 404
    # Evans's own organization is as it was.
    own = dict(outside.record)["Observation"]
    assert (await world.as_("evans", "GET", f"/fhir/Observation/{own}")).status_code == 200


async def _all_pages(world: World, who: str, url: str) -> tuple[int, list[str]]:
    """(the total of the first page, every match id following the next links)."""
    r = await world.as_(who, "GET", url)
    assert r.status_code == 200, r.text
    total = r.json()["total"]
    found: list[str] = []
    while True:
        bundle = r.json()
        found += [e["resource"]["id"] for e in bundle.get("entry", [])]
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            return total, found
        r = await world.as_(who, "GET", following[0])
        assert r.status_code == 200, r.text


async def test_search_counts_and_pages_across_the_boundary(world: World, outside: Outside) -> None:
    b, c = world.patients["B"], outside.patient

    async def observations(http: httpx.AsyncClient, patient: str, n: int) -> list[str]:
        out = []
        for k in range(n):
            r = await http.post("/fhir/Observation", headers=FHIR, json={
                "resourceType": "Observation", "status": "final", "code": {"text": f"weight {k}"},
                "subject": {"reference": f"Patient/{patient}"}, "valueQuantity": {"value": 70 + k, "unit": "kg"},
            })  # fmt: skip
            assert r.status_code == 201
            out.append(r.json()["id"])
        return out

    home_b = [dict(world.records["B"])["Observation"], *await observations(world.http, b, 4)]
    await observations(world.http, world.patients["A"], 2)  # never Evans's
    own_c = [dict(outside.record)["Observation"], *await observations(outside.http, c, 2)]
    # B lets in the whole outside organization, for observations only.
    consent_id = await grant(world.http, consent(b, f"Organization/{outside.org_resource}", ("Observation",)))
    try:
        total, found = await _all_pages(world, "evans", "/fhir/Observation?_total=accurate&_count=3")
        assert total == len(found) == len(set(found)) == len(home_b) + len(own_c)
        assert set(found) == {*home_b, *own_c}
        r = await world.as_("evans", "GET", "/fhir/Observation?_summary=count")
        assert r.json()["total"] == len(home_b) + len(own_c)
        total, found = await _all_pages(
            world,
            "evans",
            f"/fhir/Observation?subject=Patient/{b}&_total=accurate&_count=2&_sort=-_lastUpdated",
        )
        assert total == len(found) == len(home_b) and set(found) == set(home_b)
        # Newest first by one code: the granted organization's condition is asked of each row
        # (decision 0032), with the same answer as the general sort.
        heart = f"/fhir/Observation?subject=Patient/{b}&code=http://loinc.org|8867-4&_total=accurate&_count=1"
        total, found = await _all_pages(world, "evans", heart + "&_sort=-date")
        assert (total, found) == await _all_pages(world, "evans", heart + "&_sort=-date,_id")
        assert found == [dict(world.records["B"])["Observation"]]
        # Dr Fox (no patients of his own) and the nurse see B's observations only.
        for who in ("fox", "nurse_out"):
            total, found = await _all_pages(world, who, "/fhir/Observation?_total=accurate&_count=4")
            assert total == len(found) == len(home_b) and set(found) == set(home_b), who
        # Other types of B's record, and the front desk (not a clinician), stay outside the grant.
        assert (await world.as_("fox", "GET", "/fhir/Condition?_total=accurate")).json()["total"] == 0
        assert (await world.as_("desk_out", "GET", "/fhir/Patient?_total=accurate")).json()["total"] == 1
    finally:
        assert (await world.http.delete(f"/fhir/Consent/{consent_id}")).status_code == 204
    total, found = await _all_pages(world, "evans", "/fhir/Observation?_total=accurate&_count=3")
    assert total == len(found) == len(own_c)


async def test_revoking_takes_effect_on_the_next_request(world: World, outside: Outside) -> None:
    b = world.patients["B"]
    observation = dict(world.records["B"])["Observation"]
    url = f"/fhir/Observation/{observation}"
    # The patient grants it with their own sign-in.
    consent_id = await grant(
        world.http,
        consent(b, f"Practitioner/{outside.practitioners['evans']}"),
        headers=world.people["patientB"].auth,
    )
    assert (await world.as_("evans", "GET", url)).status_code == 200
    current = (await world.as_("patientB", "GET", f"/fhir/Consent/{consent_id}")).json()
    current.pop("meta")
    r = await world.as_(
        "patientB", "PUT", f"/fhir/Consent/{consent_id}", json={**current, "status": "inactive"}
    )
    assert r.status_code == 200, r.text
    assert (await world.as_("evans", "GET", url)).status_code == 404
    r = await world.as_(
        "patientB", "PUT", f"/fhir/Consent/{consent_id}", json={**current, "status": "active"}
    )
    assert (await world.as_("evans", "GET", url)).status_code == 200
    assert (await world.as_("patientB", "DELETE", f"/fhir/Consent/{consent_id}")).status_code == 204
    assert (await world.as_("evans", "GET", url)).status_code == 404
    assert (await world.as_("evans", "GET", f"/fhir/Observation?subject=Patient/{b}")).status_code == 404


async def test_a_consent_ends_with_its_period(world: World, outside: Outside) -> None:
    # B lets the whole outside organization in for the next minute.
    end = _iso(clock.now_us() // 1_000_000 + 60)
    consent_id = await grant(
        world.http, consent(world.patients["B"], f"Organization/{outside.org_resource}", end=end)
    )
    url = f"/fhir/Condition/{dict(world.records['B'])['Condition']}"
    try:
        assert (await world.as_("fox", "GET", url)).status_code == 200
        clock.advance(120)
        assert (await world.as_("fox", "GET", url)).status_code == 404
    finally:
        await world.http.delete(f"/fhir/Consent/{consent_id}")


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


async def test_only_the_patients_organization_can_grant(world: World, outside: Outside) -> None:
    b, c = world.patients["B"], outside.patient
    evans = f"Practitioner/{outside.practitioners['evans']}"
    fox = f"Practitioner/{outside.practitioners['fox']}"
    observation = dict(world.records["B"])["Observation"]
    own = (await world.as_("evans", "GET", "/fhir/Observation?_total=accurate")).json()["total"]
    # A Consent kept in the outside organization's own store grants nothing: B is not its patient.
    elsewhere = await grant(outside.http, consent(b, evans))
    # A Consent in the home organization about the outside organization's patient C grants nothing
    # of C's record there, nor of what the home organization holds about C.
    r = await world.http.post("/fhir/Observation", headers=FHIR, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "note about C"},
        "subject": {"reference": f"Patient/{c}"},
    })  # fmt: skip
    about_c = r.json()["id"]
    not_theirs = await grant(world.http, consent(c, fox))
    try:
        assert (await world.as_("evans", "GET", f"/fhir/Observation/{observation}")).status_code == 404
        assert (await world.as_("evans", "GET", f"/fhir/Patient/{b}")).status_code == 404
        assert (await world.as_("evans", "GET", f"/fhir/Observation?subject=Patient/{b}")).status_code == 404
        assert (await world.as_("evans", "GET", "/fhir/Observation?_total=accurate")).json()["total"] == own
        assert (await world.as_("fox", "GET", f"/fhir/Observation/{about_c}")).status_code == 404
        assert (
            await world.as_("fox", "GET", f"/fhir/Observation/{dict(outside.record)['Observation']}")
        ).status_code == 404
        assert (await world.as_("fox", "GET", f"/fhir/Patient/{c}")).status_code == 404
        assert (await world.as_("fox", "GET", "/fhir/Observation?_total=accurate")).json()["total"] == 0
        # A patient cannot grant access to someone else's record, nor an outside clinician to himself.
        r = await world.as_("patientA", "POST", "/fhir/Consent", json=consent(b, evans))
        assert r.status_code == 404, r.text
        r = await world.as_("evans", "POST", "/fhir/Consent", json=consent(b, evans))
        assert r.status_code == 404, r.text
        assert (await world.as_("evans", "GET", f"/fhir/Observation/{observation}")).status_code == 404
    finally:
        await outside.http.delete(f"/fhir/Consent/{elsewhere}")
        await world.http.delete(f"/fhir/Consent/{not_theirs}")


async def test_nothing_is_written_across_organizations(
    world: World, outside: Outside, evans_for_b: str
) -> None:
    b = world.patients["B"]
    observation = dict(world.records["B"])["Observation"]
    encounter = dict(world.records["B"])["Encounter"]
    url = f"/fhir/Observation/{observation}"
    before = (await world.http.get(url)).json()
    assert (await world.as_("evans", "GET", url)).status_code == 200
    changed = {k: v for k, v in before.items() if k != "meta"} | {"status": "amended"}
    r = await world.as_("evans", "PUT", url, json=changed)
    assert r.status_code == 403, r.text
    r = await world.as_(
        "evans", "PATCH", url, json=[{"op": "replace", "path": "/status", "value": "amended"}],
        headers={"Content-Type": "application/json-patch+json"},
    )  # fmt: skip
    assert r.status_code == 403, r.text
    assert (await world.as_("evans", "DELETE", url)).status_code == 403
    # Not granted: unknown, as always.
    r = await world.as_("evans", "DELETE", f"/fhir/Encounter/{encounter}")
    assert r.status_code == 204
    assert (await world.http.get(f"/fhir/Encounter/{encounter}")).status_code == 200
    # Nothing new in B's record either, in his organization or in B's.
    new = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{b}"},
    }
    assert (await world.as_("evans", "POST", "/fhir/Observation", json=new)).status_code == 404
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": changed, "request": {"method": "PUT", "url": f"Observation/{observation}"}},
    ]}  # fmt: skip
    assert (await world.as_("evans", "POST", "/fhir", json=bundle)).status_code == 403
    after = (await world.http.get(url)).json()
    assert after == before


CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def test_the_patient_sees_the_outside_clinician_look(
    world: World, outside: Outside, evans_for_b: str
) -> None:
    b = world.patients["B"]
    app = world.http._transport.app  # type: ignore[attr-defined]
    observation = dict(world.records["B"])["Observation"]
    encounter = dict(world.records["B"])["Encounter"]
    assert (await world.as_("evans", "GET", f"/fhir/Observation/{observation}")).status_code == 200
    assert (await world.as_("evans", "GET", f"/fhir/Encounter/{encounter}")).status_code == 404
    await app.state.audit_sink.close()

    async with world.db.reader() as conn:
        home = await who_viewed(conn, world.org, b, exclude_agent=f"Patient/{b}")
        away = await who_viewed(conn, outside.org, b)
    evans = [a for a in home if a.agent == world.people["evans"].fhir_user]
    assert {(a.interaction, a.outcome) for a in evans} >= {("read", "0"), ("read", "4")}
    assert all(a.site == outside.org for a in evans)
    assert next(a.what for a in evans if a.outcome == "0") == [f"Observation/{observation}/_history/1"]
    # Recorded in the patient's organization, the one whose record it is, and not in his own.
    assert not [a for a in away if a.agent == world.people["evans"].fhir_user]

    async with httpx.AsyncClient(transport=world.http._transport, base_url="https://testserver") as browser:
        token = CSRF.search((await browser.get("/signin")).text).group(1)  # type: ignore[union-attr]
        r = await browser.post("/signin", data={
            "email": f"b-{world.org}@example.org", "password": "correct horse battery B", "next": "/account",
            "csrf": token,
        })  # fmt: skip
        assert r.status_code == 303, r.text[:300]
        page = await browser.get("/account/record-access")
    assert page.status_code == 200
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0]
    evans_rows = [row for row in rows.split("<tr>") if "Evans (Riverside Clinic)" in row]
    assert any("allowed" in row for row in evans_rows) and any("refused" in row for row in evans_rows), rows
