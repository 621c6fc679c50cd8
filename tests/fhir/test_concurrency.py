"""Concurrent writes against a live ``housecall serve`` on each engine: no lost update, no lost version.

- N PUTs of the same resource with the same ``If-Match: W/"1"``: exactly one wins (200), every
  other one is refused with 412, and the history holds exactly two versions.
- N PUTs without If-Match, each with different content: all succeed, versions 2..N+1 are each
  used once, and every submitted content is in the history (nothing lost, nothing duplicated).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import LiveServer, drop_database, new_database

N = 20
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def live(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = new_database(engine, tmp_path_factory.mktemp(f"live-{engine}"))
    server = LiveServer(url).start()
    try:
        yield server
    finally:
        server.stop()
        drop_database(url)


def patient(pid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}], "gender": "unknown"}


async def concurrently(live: LiveServer, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send the requests at once, each on its own (already open) connection."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(
        base_url=live.base, limits=limits, timeout=60, headers=live.auth_headers()
    ) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in requests))  # open the connections
        return list(await asyncio.gather(*(client.request(**req) for req in requests)))


async def history(live: LiveServer, res_type: str, res_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=live.base, timeout=60, headers=live.auth_headers()) as client:
        r = await client.get(f"/fhir/{res_type}/{res_id}/_history?_count=1000")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == len(body.get("entry", []))
        return [e.get("resource", {}) | {"_status": e["response"]["status"]} for e in body.get("entry", [])]


async def test_concurrent_if_match_has_one_winner(live: LiveServer) -> None:
    pid = f"race-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=live.base, timeout=60, headers=live.auth_headers()) as client:
        r = await client.put(f"/fhir/Patient/{pid}", json=patient(pid, "Original"), headers=FHIR)
        assert r.status_code == 201, r.text
        assert r.headers["etag"] == 'W/"1"'

    requests = [
        {
            "method": "PUT",
            "url": f"/fhir/Patient/{pid}",
            "json": patient(pid, f"Writer{n}"),
            "headers": {**FHIR, "If-Match": 'W/"1"'},
        }
        for n in range(N)
    ]
    responses = await concurrently(live, requests)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({200: 1, 412: N - 1}), statuses
    for r in responses:
        if r.status_code == 412:
            assert r.json()["resourceType"] == "OperationOutcome"
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert winner["meta"]["versionId"] == "2"

    async with httpx.AsyncClient(base_url=live.base, timeout=60, headers=live.auth_headers()) as client:
        current = (await client.get(f"/fhir/Patient/{pid}")).json()
    assert current["meta"]["versionId"] == "2"
    assert current["name"] == winner["name"]
    versions = await history(live, "Patient", pid)
    assert sorted(v["meta"]["versionId"] for v in versions) == ["1", "2"]


async def test_concurrent_updates_lose_nothing(live: LiveServer) -> None:
    pid = f"busy-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=live.base, timeout=60, headers=live.auth_headers()) as client:
        r = await client.put(f"/fhir/Patient/{pid}", json=patient(pid, "Original"), headers=FHIR)
        assert r.status_code == 201, r.text

    families = [f"Writer{n}" for n in range(N)]
    requests = [
        {"method": "PUT", "url": f"/fhir/Patient/{pid}", "json": patient(pid, family), "headers": FHIR}
        for family in families
    ]
    responses = await concurrently(live, requests)
    assert [r.status_code for r in responses] == [200] * N, [(r.status_code, r.text[:200]) for r in responses]
    answered = sorted(int(r.json()["meta"]["versionId"]) for r in responses)
    assert answered == list(range(2, N + 2)), "two updates were answered with the same version"

    versions = await history(live, "Patient", pid)
    assert sorted(int(v["meta"]["versionId"]) for v in versions) == list(range(1, N + 2))
    stored_families = Counter(v["name"][0]["family"] for v in versions)
    assert stored_families == Counter(["Original", *families]), "an update was lost or stored twice"
    # Each answer's content is the content of the version it names.
    by_version = {v["meta"]["versionId"]: v["name"] for v in versions}
    for r in responses:
        body = r.json()
        assert by_version[body["meta"]["versionId"]] == body["name"]


async def test_concurrent_update_as_create_loses_nothing(live: LiveServer, engine: str) -> None:
    """N PUTs of a new id at once: one creates it, the rest update it (on PostgreSQL the id is
    locked while it has no row); everything answered must be in the history under its own version."""
    pid = f"upsert-{uuid.uuid4().hex[:12]}"
    requests = [
        {"method": "PUT", "url": f"/fhir/Patient/{pid}", "json": patient(pid, f"Writer{n}"), "headers": FHIR}
        for n in range(N)
    ]
    responses = await concurrently(live, requests)
    statuses = Counter(r.status_code for r in responses)
    assert statuses[201] == 1, statuses
    assert set(statuses) <= {200, 201}, statuses

    accepted = [r.json() for r in responses if r.status_code in (200, 201)]
    answered = sorted(int(b["meta"]["versionId"]) for b in accepted)
    assert answered == list(range(1, len(accepted) + 1))
    versions = await history(live, "Patient", pid)
    assert len(versions) == len(accepted)
    by_version = {v["meta"]["versionId"]: v["name"] for v in versions}
    for body in accepted:
        assert by_version[body["meta"]["versionId"]] == body["name"]


async def test_concurrent_conditional_creates_make_one_resource(live: LiveServer) -> None:
    """If-None-Exist, N times at once, plain and inside transactions: one resource is created and
    every other request finds it. (On PostgreSQL the searches used to run side by side, each saw
    nothing, several created, and from then on every conditional create of those criteria failed
    with 412 multiple matches.)"""
    for form in ("header", "transaction"):
        value = uuid.uuid4().hex
        criteria = f"identifier=urn:test:race|{value}"
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:test:race", "value": value}]}
        if form == "header":
            request = {"method": "POST", "url": "/fhir/Patient", "json": body,
                       "headers": {**FHIR, "If-None-Exist": criteria}}  # fmt: skip
        else:
            entry = {
                "resource": body,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria},
            }
            request = {"method": "POST", "url": "/fhir", "headers": FHIR,
                       "json": {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}}  # fmt: skip
        responses = await concurrently(live, [request] * N)
        assert [r.status_code for r in responses if r.status_code not in (200, 201)] == [], form
        if form == "header":
            ids = {r.json()["id"] for r in responses}
            assert Counter(r.status_code for r in responses) == Counter({201: 1, 200: N - 1})
        else:
            results = [r.json()["entry"][0]["response"] for r in responses]
            ids = {x["location"].split("/")[1] for x in results}
            assert Counter(x["status"].split()[0] for x in results) == Counter({"201": 1, "200": N - 1})
        assert len(ids) == 1, f"{form}: {len(ids)} resources created for one identifier"
        async with httpx.AsyncClient(base_url=live.base, timeout=60, headers=live.auth_headers()) as client:
            r = await client.get(f"/fhir/Patient?{criteria}&_summary=count")
            assert r.json()["total"] == 1, form
