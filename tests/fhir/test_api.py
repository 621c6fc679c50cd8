"""The REST interactions end to end through the ASGI app, on both engines."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from housecall.audit.trail import sink_for

FHIR = "application/fhir+json"


def patient(family: str = "Rivera", **extra: object) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Ana"]}],
        "gender": "female",
        **extra,
    }


async def test_create_read_update_delete_history(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient", json=patient(), headers={"Content-Type": FHIR})
    assert r.status_code == 201, r.text
    body = r.json()
    pid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"] == f"http://testserver/fhir/Patient/{pid}/_history/1"
    assert "last-modified" in r.headers

    r = await client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "Rivera"

    updated = {**body, "gender": "other"}
    r = await client.put(f"/fhir/Patient/{pid}", json=updated, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"

    r = await client.put(f"/fhir/Patient/{pid}", json=updated, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412 and r.json()["resourceType"] == "OperationOutcome"

    r = await client.get(f"/fhir/Patient/{pid}/_history/1")
    assert r.status_code == 200 and r.json()["gender"] == "female"

    r = await client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": "2"})
    assert r.status_code == 304

    r = await client.delete(f"/fhir/Patient/{pid}")
    assert r.status_code == 204
    r = await client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 410 and r.json()["issue"][0]["code"] == "deleted"

    r = await client.get(f"/fhir/Patient/{pid}/_history")
    history = r.json()
    assert history["type"] == "history" and history["total"] == 3
    assert [e["response"]["status"] for e in history["entry"]] == ["204", "200", "201"]


async def test_update_as_create_and_noop_update(client: httpx.AsyncClient) -> None:
    res = patient("Okafor", id="client-chosen-1")
    r = await client.put("/fhir/Patient/client-chosen-1", json=res)
    assert r.status_code == 201
    r = await client.put("/fhir/Patient/client-chosen-1", json=res)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "1"


async def test_conditional_create(client: httpx.AsyncClient) -> None:
    res = patient("Conditional", identifier=[{"system": "urn:test:mrn", "value": "cc-1"}])
    first = await client.post(
        "/fhir/Patient", json=res, headers={"If-None-Exist": "identifier=urn:test:mrn|cc-1"}
    )
    again = await client.post(
        "/fhir/Patient", json=res, headers={"If-None-Exist": "identifier=urn:test:mrn|cc-1"}
    )
    fhirpy_form = await client.post("/fhir/Patient?identifier=urn:test:mrn|cc-1", json=res)
    assert first.status_code == 201
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert fhirpy_form.status_code == 200 and fhirpy_form.json()["id"] == first.json()["id"]


async def test_patch_json_patch_and_merge(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=patient("Patchy"))).json()["id"]
    r = await client.patch(
        f"/fhir/Patient/{pid}",
        content=b'[{"op":"replace","path":"/gender","value":"male"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 200 and r.json()["gender"] == "male"
    r = await client.patch(
        f"/fhir/Patient/{pid}",
        json={"birthDate": "1990-01-02"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert (
        r.status_code == 200
        and r.json()["birthDate"] == "1990-01-02"
        and r.json()["meta"]["versionId"] == "3"
    )
    r = await client.patch(
        f"/fhir/Patient/{pid}",
        content=b'[{"op":"replace","path":"/birthDate","value":"not-a-date"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Patient.birthDate"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/fhir/Patient", b"{not json", 400),
        ("POST", "/fhir/Patient", b'{"resourceType":"Observation","status":"final","code":{}}', 400),
        ("POST", "/fhir/Patient", b'{"resourceType":"Patient","birthDate":"12/03/1980"}', 400),
        ("POST", "/fhir/NotAType", b'{"resourceType":"NotAType"}', 404),
        ("GET", "/fhir/Patient/does-not-exist", None, 404),
        ("GET", "/fhir/Patient?_count=100000", None, 400),
        ("PUT", "/fhir/Patient/abc", b'{"resourceType":"Patient","id":"xyz"}', 400),
        ("POST", "/fhir", b'{"resourceType":"Bundle","type":"collection"}', 400),
    ],
)
async def test_errors_are_operation_outcomes(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int
) -> None:
    r = await client.request(method, path, content=body, headers={"Content-Type": FHIR})
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_body_limit_is_413(fresh_database_url: str) -> None:
    from tests.conftest import _client

    async for c in _client(fresh_database_url, max_body_bytes=1000):
        r = await c.post("/fhir/Patient", content=b'{"resourceType":"Patient","x":"' + b"a" * 2000 + b'"}')
        assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"


async def test_paging_links_follow_forwarded_headers(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await client.post("/fhir/Patient", json=patient(f"Pager{n}"))
    r = await client.get(
        "/fhir/Patient?family=Pager&_count=1",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "portal.example.org",
            "X-Forwarded-Prefix": "/api",
        },
    )
    links = {link["relation"]: link["url"] for link in r.json()["link"]}
    assert links["next"].startswith("https://portal.example.org/api/fhir/Patient?")
    r = await client.get(
        "/fhir/Patient?family=Pager&_count=1", headers={"Forwarded": 'proto=https;host="h.example"'}
    )
    assert r.json()["entry"][0]["fullUrl"].startswith("https://h.example/fhir/Patient/")


async def test_read_is_one_statement_besides_token_and_audit(client: httpx.AsyncClient) -> None:
    """The primary-key read and the audit event (its own transaction: on SQLite BEGIN IMMEDIATE,
    INSERT, COMMIT), and on SQLite the token lookup: on PostgreSQL the process remembers the token
    it checked for the create (decision 0027)."""
    pid = (await client.post("/fhir/Patient", json=patient("Counted"))).json()["id"]
    state = client._transport.app.state  # type: ignore[attr-defined]
    db = state.db
    await sink_for(state).close()
    before = db.counter.statements
    assert (await client.get(f"/fhir/Patient/{pid}")).status_code == 200
    await sink_for(state).close()  # the read's audit event follows the answer
    assert db.counter.statements - before == {"postgresql": 2, "sqlite": 5}[db.dialect]


async def test_long_indexed_strings_are_stored_and_searchable(client: httpx.AsyncClient) -> None:
    # A 5,000-character name would overflow a PostgreSQL btree entry if indexed whole.
    long_name = "Longname" + "x" * 5000
    r = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": long_name})
    assert r.status_code == 201, r.text
    found = (await client.get("/fhir/Organization?name=longnamexxx")).json()
    assert r.json()["id"] in [e["resource"]["id"] for e in found["entry"]]


async def test_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    r = await client.request("PATCH", "/fhir/Patient")
    assert r.status_code == 405 and r.json()["resourceType"] == "OperationOutcome"
    r = await client.get("/fhir/Observation/x/$everything")
    assert r.status_code == 404
    r = await client.get("/fhir/Patient/a/b/c/d/e")
    assert r.status_code == 404


async def test_unexpected_errors_are_500_outcomes_without_internals(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from housecall.fhir import interactions

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail /srv/housecall/store.py line 42")

    monkeypatch.setattr(interactions, "read", broken)
    r = await client.get("/fhir/Patient/anything")
    assert r.status_code == 500
    assert r.json()["issue"][0]["code"] == "exception"
    assert "secret" not in r.text and "Traceback" not in r.text and "store.py" not in r.text


async def test_summary_true_keeps_summary_elements_only(client: httpx.AsyncClient) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 70, "unit": "kg"},
        "note": [{"text": "after breakfast"}],  # not a summary element
        "interpretation": [{"text": "normal"}],  # not a summary element
    }
    oid = (await client.post("/fhir/Observation", json=obs)).json()["id"]
    body = (await client.get(f"/fhir/Observation?_id={oid}&_summary=true")).json()["entry"][0]["resource"]
    assert set(body) == {"resourceType", "id", "meta", "status", "code", "valueQuantity"}
    assert body["meta"]["tag"][-1]["code"] == "SUBSETTED"
    body = (await client.get(f"/fhir/Observation?_id={oid}&_elements=value")).json()["entry"][0]["resource"]
    assert "valueQuantity" in body and "note" not in body


async def test_patient_scoped_code_search_is_exact(client: httpx.AsyncClient) -> None:
    # An Observation about one patient performed by another is in both compartments; a search by
    # subject must still only find it for its subject (decision 0004's narrowed token rows).
    x = (await client.post("/fhir/Patient", json=patient("Subjectx"))).json()["id"]
    y = (await client.post("/fhir/Patient", json=patient("Performery"))).json()["id"]
    code = {"coding": [{"system": "urn:test:codes", "code": f"c-{x[:8]}"}]}
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": code,
        "subject": {"reference": f"Patient/{x}"},
        "performer": [{"reference": f"Patient/{y}"}],
    }
    oid = (await client.post("/fhir/Observation", json=obs)).json()["id"]
    token = f"urn:test:codes|c-{x[:8]}"

    async def ids(query: str) -> set[str]:
        body = (await client.get(f"/fhir/Observation?{query}")).json()
        return {e["resource"]["id"] for e in body.get("entry", [])}

    assert await ids(f"subject=Patient/{x}&code={token}") == {oid}
    assert await ids(f"subject=Patient/{y}&code={token}") == set()
    assert await ids(f"performer=Patient/{y}&code={token}") == {oid}
    assert await ids(f"performer=Patient/{x}&code={token}") == set()
    assert await ids(f"subject:Patient={x}&code={token}") == {oid}
    assert await ids(f"subject=Patient/{x}&code:not={token}") == set()
    assert await ids(f"subject=Patient/{x}&code={token},urn:test:codes|other") == {oid}


async def test_combo_parameters_search_code_and_components(client: httpx.AsyncClient) -> None:
    tag = f"combo-{(await client.post('/fhir/Patient', json=patient('Combo'))).json()['id'][:8]}"
    bp = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:test:combo", "code": f"{tag}-panel"}]},
        "component": [
            {
                "code": {"coding": [{"system": "urn:test:combo", "code": f"{tag}-sys"}]},
                "valueQuantity": {"value": 117, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
            }
        ],
    }
    oid = (await client.post("/fhir/Observation", json=bp)).json()["id"]

    async def ids(query: str) -> set[str]:
        body = (await client.get(f"/fhir/Observation?{query}")).json()
        return {e["resource"]["id"] for e in body.get("entry", [])}

    assert await ids(f"combo-code=urn:test:combo|{tag}-panel") == {oid}  # the code itself
    assert await ids(f"combo-code=urn:test:combo|{tag}-sys") == {oid}  # a component's code
    assert await ids(f"code=urn:test:combo|{tag}-sys") == set()
    assert await ids(f"combo-code=urn:test:combo|{tag}-sys&combo-value-quantity=117") == {oid}
    assert await ids(f"combo-code=urn:test:combo|{tag}-sys&combo-value-quantity=118") == set()


async def test_a_write_and_its_audit_event_commit_together(client: httpx.AsyncClient) -> None:
    """A successful write's event is in the write's own transaction (on PostgreSQL in its very
    statement), not committed after it. (On SQLite ``test_create_statement_count`` sees it.)"""
    state = client._transport.app.state  # type: ignore[attr-defined]
    r = await client.post("/fhir/Patient", json=patient("Audited"))
    assert r.status_code == 201
    pid = r.json()["id"]
    async with state.db.reader() as conn:
        rows = await conn.fetch("SELECT event FROM audit_log WHERE patient_id = $1 ORDER BY seq DESC", pid)
        if state.db.dialect == "postgresql":
            written_by = await conn.fetch(
                "SELECT xmin::text FROM resource WHERE res_id = $1 UNION ALL "
                "SELECT xmin::text FROM audit_log WHERE patient_id = $1",
                pid,
            )
            assert len(written_by) == 2 and written_by[0] == written_by[1]
    events = [json.loads(bytes(row[0])) for row in rows]
    assert [e["action"] for e in events] == ["C"]
    assert events[0]["outcome"] == "0"
    assert {"reference": f"Patient/{r.json()['id']}/_history/1"} in [
        x.get("what") for x in events[0]["entity"]
    ]


async def test_patient_of_an_observation_is_its_subject_when_that_is_a_patient(
    client: httpx.AsyncClient,
) -> None:
    """Observation's ``patient`` is ``subject.where(resolve() is Patient)``: it is answered from the
    subject rows of a Patient (no rows of its own), so a Group with the same id is not a patient -
    in searches, ``:missing``, ``_include``, ``_revinclude`` and ``_has`` alike."""
    pid = f"alias-{uuid.uuid4().hex[:16]}"
    await client.put(f"/fhir/Patient/{pid}", json={**patient("Alias"), "id": pid})
    await client.put(
        f"/fhir/Group/{pid}", json={"resourceType": "Group", "id": pid, "type": "person", "actual": True}
    )

    def obs(subject: str) -> dict[str, object]:
        return {"resourceType": "Observation", "status": "final", "subject": {"reference": subject},
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}  # fmt: skip

    mine = (await client.post("/fhir/Observation", json=obs(f"Patient/{pid}"))).json()["id"]
    group = (await client.post("/fhir/Observation", json=obs(f"Group/{pid}"))).json()["id"]

    async def ids(query: str) -> set[str]:
        r = await client.get(f"/fhir/{query}")
        assert r.status_code == 200, r.text
        return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json().get("entry", [])}

    assert await ids(f"Observation?patient={pid}") == {f"Observation/{mine}"}
    assert await ids(f"Observation?subject={pid}") == {f"Observation/{mine}", f"Observation/{group}"}
    assert f"Observation/{group}" in await ids("Observation?patient:missing=true&code=8867-4")
    assert f"Observation/{mine}" not in await ids("Observation?patient:missing=true&code=8867-4")
    assert await ids(f"Observation?_id={mine},{group}&_include=Observation:patient") == {
        f"Observation/{mine}",
        f"Observation/{group}",
        f"Patient/{pid}",
    }
    assert await ids(f"Patient?_id={pid}&_revinclude=Observation:patient") == {
        f"Patient/{pid}",
        f"Observation/{mine}",
    }
    assert await ids(f"Patient?_has:Observation:patient:code=8867-4&_id={pid}") == {f"Patient/{pid}"}
    assert await ids(f"Group?_has:Observation:patient:code=8867-4&_id={pid}") == set()
    assert await ids(f"Observation?patient.family=Alias&_id={mine},{group}") == {f"Observation/{mine}"}
    async with client._transport.app.state.db.reader() as conn:  # type: ignore[attr-defined]
        stored = await conn.fetch("SELECT param FROM sp_reference WHERE res_id = $1", mine)
    assert [r[0] for r in stored] == ["subject"]
