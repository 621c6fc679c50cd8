"""fhirpy's AsyncFHIRClient against ``housecall serve`` on both engines, the way an app would use it.

One live server per engine for the module. Each test works on resources of its own, told apart by
an identifier system made for the test, so the tests do not depend on each other's data.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound


@pytest.fixture(scope="module")
def server(fhir_base: str) -> str:
    return fhir_base


@pytest.fixture(scope="module")
def auth(fhir_token: str) -> str:
    """The Authorization header value of a backend service of the test organization."""
    return f"Bearer {fhir_token}"


class RecordingClient(AsyncFHIRClient):
    """Remembers every request fhirpy makes (path and params), to see what it sent."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.requests: list[tuple[str, str, Any]] = []

    async def _do_request(  # type: ignore[override]
        self,
        method: str,
        path: str,
        data: Any = None,
        params: Any = None,
        extra_headers: Any = None,
        *,
        returning_status: bool = False,
    ) -> Any:
        self.requests.append((method.upper(), path, params))
        return await super()._do_request(
            method, path, data, params, extra_headers, returning_status=returning_status
        )


def new_system() -> str:
    return f"urn:test:fhirpy:{uuid.uuid4().hex}"


async def test_create_read_update_patch_refresh_delete(server: str, auth: str) -> None:
    client = AsyncFHIRClient(server, authorization=auth)
    system = new_system()
    p = client.resource(
        "Patient",
        identifier=[{"system": system, "value": "1"}],
        name=[{"family": "Fhirpy", "given": ["Ana"]}],
        gender="female",
    )
    await p.save()  # POST; fhirpy takes the id from the returned body
    pid = p.id
    assert pid
    assert p["meta"]["versionId"] == "1"

    got = await client.reference("Patient", pid).to_resource()
    assert got.id == pid
    assert got["name"][0]["family"] == "Fhirpy"
    assert (await client.get("Patient", pid))["gender"] == "female"

    p["gender"] = "other"
    await p.save()  # PUT
    assert p["meta"]["versionId"] == "2"
    assert (await client.get("Patient", pid))["gender"] == "other"

    # fhirpy's patch sends the changed fields as a partial resource (application/json): a merge patch.
    await p.patch(birthDate="1990-01-02")
    assert p["meta"]["versionId"] == "3"
    stored = await client.get("Patient", pid)
    assert stored["birthDate"] == "1990-01-02"
    assert stored["gender"] == "other"
    assert stored["name"][0]["family"] == "Fhirpy"
    assert stored["identifier"] == [{"system": system, "value": "1"}]

    # refresh() sends a bare `If-None-Match: 3`; on 304 fhirpy leaves the object alone, so an
    # unsaved local change survives - it would be overwritten by a 200.
    p["gender"] = "unknown"
    await p.refresh()
    assert p["gender"] == "unknown"
    async with httpx.AsyncClient(headers={"Authorization": auth}) as http:
        r = await http.get(f"{server}/Patient/{pid}", headers={"If-None-Match": "3"})
        assert r.status_code == 304
        assert r.headers["etag"] == 'W/"3"'
    # Changed elsewhere: refresh fetches the new version.
    other = await client.reference("Patient", pid).to_resource()
    other["gender"] = "male"
    await other.save()
    await p.refresh()
    assert p["gender"] == "male"
    assert p["meta"]["versionId"] == "4"

    await p.delete()
    with pytest.raises(ResourceNotFound):
        await client.reference("Patient", pid).to_resource()
    async with httpx.AsyncClient(headers={"Authorization": auth}) as http:
        r = await http.get(f"{server}/Patient/{pid}")
        assert r.status_code == 410
        assert r.json()["issue"][0]["code"] == "deleted"


async def test_get_or_create(server: str, auth: str) -> None:
    client = RecordingClient(server, authorization=auth)
    system = new_system()
    res = client.resource(
        "Patient", identifier=[{"system": system, "value": "42"}], name=[{"family": "Once"}]
    )
    search = client.resources("Patient").search(identifier=f"{system}|42")
    first, created = await search.get_or_create(res)
    # fhirpy sends the criteria as the query string of the POST and tells created from found by 201/200.
    assert client.requests[-1][:2] == ("POST", "Patient")
    assert client.requests[-1][2] == {"identifier": [f"{system}|42"]}
    assert created is True
    again, created_again = await search.get_or_create(res)
    assert created_again is False
    assert again.id == first.id
    assert await search.count() == 1


async def test_control_parameters_in_the_query_of_a_post_are_not_criteria(server: str, auth: str) -> None:
    """fhirpy's conditional create travels in the query string; `_format`/`_pretty` there are no criteria.

    Before the fix a POST /Patient?_format=json was taken as "create if none exists matching
    nothing", so with one Patient stored it returned that Patient (200, nothing created) and with two
    it failed with 412.
    """
    client = AsyncFHIRClient(server, authorization=auth)
    for n in range(2):  # make sure there are Patients to be wrongly "found"
        await client.resource("Patient", name=[{"family": f"Existing{n}"}]).save()
    for params in ({"_format": "json"}, {"_pretty": "true"}, {"_format": "json", "_pretty": "false"}):
        body, status = await client._do_request(
            "post", "Patient", {"resourceType": "Patient", "name": [{"family": "Fresh"}]}, params,
            returning_status=True,
        )  # fmt: skip
        assert status == 201, params
        assert body["name"] == [{"family": "Fresh"}]
        assert body["meta"]["versionId"] == "1"


async def test_search_with_several_parameters(server: str, auth: str) -> None:
    client = AsyncFHIRClient(server, authorization=auth)
    system = new_system()
    people = [
        ("a", "Brown", "female", "1985-02-03"),
        ("b", "Brown", "male", "1991-07-08"),
        ("c", "Browning", "female", "1992-11-30"),
        ("d", "Green", "female", "1999-01-01"),
        ("e", "Brown", "female", "2001-05-06"),
    ]
    ids = {}
    for key, family, gender, born in people:
        p = client.resource(
            "Patient",
            identifier=[{"system": system, "value": key}],
            name=[{"family": family}],
            gender=gender,
            birthDate=born,
        )
        await p.save()
        ids[key] = p.id
    mine = client.resources("Patient").search(identifier=f"{system}|")

    async def keys(searchset: Any) -> list[str]:
        by_id = {v: k for k, v in ids.items()}
        return [by_id[r.id] for r in await searchset.fetch_all()]

    # string prefix + token + two date bounds, ANDed
    found = mine.search(family="brown", gender="female", birthdate__ge="1990", birthdate__lt="2000")
    assert sorted(await keys(found)) == ["c"]
    assert sorted(await keys(mine.search(family__exact="Brown", gender="female"))) == ["a", "e"]
    assert sorted(await keys(mine.search(family="brown", gender__not="female"))) == ["b"]
    assert await keys(mine.search(family="brown").sort("-birthdate")) == ["e", "c", "b", "a"]
    assert sorted(await keys(mine.search(birthdate="1999"))) == ["d"]

    # Observations of these people: chained (subject:Patient.identifier) and with _include.
    for key in ("a", "c"):
        obs = client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            subject={"reference": f"Patient/{ids[key]}"},
            valueQuantity={"value": 60 + len(key), "unit": "/min", "system": "http://unitsofmeasure.org",
                           "code": "/min"},
        )  # fmt: skip
        await obs.save()
    chained = client.resources("Observation").search(subject__Patient__identifier=f"{system}|c")
    (only,) = await chained.fetch_all()
    assert only["subject"]["reference"] == f"Patient/{ids['c']}"
    bundle = (
        await client.resources("Observation")
        .search(subject__Patient__identifier=f"{system}|")
        .include("Observation", "subject")
        .fetch_raw()
    )
    modes = sorted((e["search"]["mode"], e["resource"]["resourceType"]) for e in bundle["entry"])
    assert modes == [("include", "Patient")] * 2 + [("match", "Observation")] * 2


async def test_fetch_all_pages_through_next_links_and_count(server: str, auth: str) -> None:
    client = RecordingClient(server, authorization=auth)
    patient = client.resource("Patient", name=[{"family": "Pager"}])
    await patient.save()
    created = []
    for n in range(14):
        obs = client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            subject={"reference": f"Patient/{patient.id}"},
            effectiveDateTime=f"2024-01-{n + 1:02d}",
            valueQuantity={"value": 70 + n, "system": "http://unitsofmeasure.org", "code": "kg"},
        )
        await obs.save()
        created.append(obs.id)
    client.requests.clear()
    search = client.resources("Observation").search(subject=f"Patient/{patient.id}")
    everything = await search.limit(4).fetch_all()
    assert sorted(o.id for o in everything) == sorted(created)  # 14 distinct, none lost
    # 4 pages of 4: the first request by fhirpy, then three absolute `next` links on our base.
    assert len(client.requests) == 4
    assert all(path.startswith(f"{server}/Observation?") for _, path, _ in client.requests[1:])
    newest_first = await search.sort("-date").limit(5).fetch_all()
    assert [o.id for o in newest_first] == created[::-1]

    client.requests.clear()
    assert await search.count() == 14
    (_, _, params) = client.requests[-1]
    assert params["_count"] == 0
    assert params["_totalMethod"] == "count"
    later = client.resources("Observation").search(subject=f"Patient/{patient.id}", date__ge="2024-01-10")
    assert await later.count() == 5


async def test_unknown_parameters_lenient_by_default_strict_on_request(server: str, auth: str) -> None:
    system = new_system()
    lenient = AsyncFHIRClient(server, authorization=auth)
    await lenient.resource("Patient", identifier=[{"system": system, "value": "x"}]).save()
    found = await lenient.resources("Patient").search(identifier=f"{system}|x", not_a_param="1").fetch()
    assert len(found) == 1
    strict = AsyncFHIRClient(server, authorization=auth, extra_headers={"Prefer": "handling=strict"})
    with pytest.raises(OperationOutcome) as info:
        await strict.resources("Patient").search(identifier=f"{system}|x", not_a_param="1").fetch()
    issue = info.value.resource["issue"][0]
    assert issue["code"] == "not-supported"
    assert "not-a-param" in issue["diagnostics"]
    # A known parameter is fine in strict mode too.
    assert len(await strict.resources("Patient").search(identifier=f"{system}|x").fetch()) == 1
