"""Batch and transaction Bundles (R4 http.html#transaction) and request limits, on both engines.

- A transaction is all-or-nothing: whichever entry fails, and at whatever stage (reference
  resolution, the DELETE pass, the plain creates, the PUT pass after creates were written, the
  final GETs), nothing is stored and the OperationOutcome names the failing entry.
- ``Bundle-bundle-transaction.json``, the HL7 example transaction, works once the state it
  presupposes exists, except for entry 7, ``POST ValueSet/$lookup``: Housecall has no terminology
  service, so that entry is refused with a 400 naming it and the whole transaction fails. Entry 4
  (``PUT Patient/123a`` with ``ifMatch: W/"2"``) needs Patient/123a at version 2, and entry 9
  (``GET Patient/12334``) needs Patient/12334 to exist; without them the transaction fails too,
  as it must.
- Conditional references (``Patient?identifier=...``) resolve to the one resource they match.
- A batch reports each entry on its own and keeps the good ones.
- Limits: too many entries is 413, JSON nested too deeply is 400, ``_count`` above the maximum 400.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from housecall.audit.trail import sink_for

FHIR = {"Content-Type": "application/fhir+json"}


def new_uuid() -> str:
    return str(uuid.uuid4())


def patient(family: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], "gender": "female", **extra}


def post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    entry["request"].update(request)
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], url: str | None = None, **request: Any) -> dict[str, Any]:
    url = url or f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


async def versions(client: httpx.AsyncClient) -> int:
    r = await client.get("/fhir/_history?_count=0")
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def diagnostics(r: httpx.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", r.text
    return " ".join(i.get("diagnostics", "") for i in body["issue"])


# -- all or nothing ---------------------------------------------------------------------------------


def _bad_entries(existing_id: str) -> dict[str, tuple[dict[str, Any], int]]:
    """Entries that each fail a transaction at a different stage, with the status expected."""
    no_match = f"Patient?identifier=urn:none|{new_uuid()}"
    stale_delete = {"method": "DELETE", "url": f"Patient/{existing_id}", "ifMatch": 'W/"9"'}
    lookup = {
        "resource": {"resourceType": "Parameters"},
        "request": {"method": "POST", "url": "ValueSet/$lookup"},
    }
    return {
        "invalid create": (post(patient("Bad", birthDate="12/03/1980")), 400),
        "invalid update": (put(patient("Bad", id=f"bad-{new_uuid()[:8]}", birthDate="03/12/1980")), 400),
        "unknown urn:uuid reference": (post(observation(f"urn:uuid:{new_uuid()}")), 400),
        "conditional reference without match": (post(observation(no_match)), 412),
        "update with a stale If-Match": (put(patient("Stale", id=existing_id), ifMatch='W/"7"'), 412),
        "delete with a stale If-Match": ({"request": stale_delete}, 412),
        "read of a missing resource": (
            {"request": {"method": "GET", "url": f"Patient/gone-{new_uuid()}"}},
            404,
        ),
        "POST to an operation": (lookup, 400),
    }


BAD_KINDS = list(_bad_entries("x"))


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_transaction_with_one_bad_entry_stores_nothing(client: httpx.AsyncClient, kind: str) -> None:
    existing = (await client.post("/fhir/Patient", json=patient("Existing"))).json()
    bad, status = _bad_entries(existing["id"])[kind]
    patient_uuid = new_uuid()
    put_id = f"tx-{new_uuid()[:8]}"
    entries = [
        post(patient("Good"), f"urn:uuid:{patient_uuid}"),
        post(observation(f"urn:uuid:{patient_uuid}")),
        put(patient("GoodPut", id=put_id)),
        {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}}
        if "delete" not in kind
        else None,
        bad,
    ]
    entries = [e for e in entries if e is not None]
    bad_index = len(entries) - 1
    before = await versions(client)

    r = await client.post("/fhir", json=bundle("transaction", *entries), headers=FHIR)
    assert r.status_code == status, r.text
    assert f"entry {bad_index}" in diagnostics(r), diagnostics(r)

    assert await versions(client) == before, "a failed transaction left versions behind"
    assert (await client.get(f"/fhir/Patient/{patient_uuid}")).status_code == 404
    assert (await client.get(f"/fhir/Patient/{put_id}")).status_code == 404
    r = await client.get(f"/fhir/Patient/{existing['id']}")
    assert r.status_code == 200, "the DELETE in the failed transaction was not rolled back"
    assert r.json()["meta"]["versionId"] == "1"

    # The same Bundle without the bad entry goes through, so it was that entry that failed it.
    r = await client.post("/fhir", json=bundle("transaction", *entries[:-1]), headers=FHIR)
    assert r.status_code == 200, r.text
    assert (await client.get(f"/fhir/Patient/{patient_uuid}")).status_code == 200


# -- the HL7 example transaction ------------------------------------------------------------------


def hl7_transaction(fixtures: Path) -> dict[str, Any]:
    return json.loads((fixtures / "hl7-r4-examples" / "Bundle-bundle-transaction.json").read_bytes())


async def test_hl7_example_transaction_as_published_fails_on_lookup(
    fresh_client: httpx.AsyncClient, fixtures: Path
) -> None:
    example = hl7_transaction(fixtures)
    assert example["entry"][7]["request"] == {"method": "POST", "url": "ValueSet/$lookup"}
    r = await fresh_client.post("/fhir", json=example, headers=FHIR)
    assert r.status_code == 400, r.text
    assert "entry 7" in diagnostics(r)
    assert await versions(fresh_client) == 0


async def _prepare_hl7_state(client: httpx.AsyncClient) -> dict[str, str]:
    """What Bundle-bundle-transaction.json presupposes on the server."""
    ids_system = "http:/example.org/fhir/ids"  # sic, as in the example
    made: dict[str, str] = {}
    for family, value in (("Existing", "234234"), ("Before", "456456")):
        r = await client.post(
            "/fhir/Patient", json=patient(family, identifier=[{"system": ids_system, "value": value}])
        )
        made[value] = r.json()["id"]
    r = await client.post("/fhir/Patient", json=patient("Doomed", identifier=[{"value": "123456"}]))
    made["123456"] = r.json()["id"]
    for family in ("First", "Second"):
        r = await client.put("/fhir/Patient/123a", json=patient(family, id="123a"))
        assert r.status_code in (200, 201), r.text
    r = await client.put("/fhir/Patient/234", json=patient("Deleted", id="234"))
    assert r.status_code == 201, r.text
    for n in range(4):
        r = await client.put("/fhir/Patient/12334", json=patient(f"Read{n}", id="12334"))
        assert r.status_code in (200, 201), r.text
    assert r.json()["meta"]["versionId"] == "4"
    return made


async def test_hl7_example_transaction_needs_its_preconditions(
    fresh_client: httpx.AsyncClient, fixtures: Path
) -> None:
    example = hl7_transaction(fixtures)
    del example["entry"][7]
    r = await fresh_client.post("/fhir", json=example, headers=FHIR)
    # PUT Patient/123a with ifMatch W/"2" on an empty server: 412, and nothing else stays.
    assert r.status_code == 412, r.text
    assert "entry 4" in diagnostics(r)
    assert await versions(fresh_client) == 0


async def test_hl7_example_transaction_without_lookup(
    fresh_client: httpx.AsyncClient, fixtures: Path
) -> None:
    client = fresh_client
    made = await _prepare_hl7_state(client)
    example = hl7_transaction(fixtures)
    del example["entry"][7]  # POST ValueSet/$lookup: no terminology service
    first_uuid = example["entry"][0]["fullUrl"].removeprefix("urn:uuid:")

    r = await client.post("/fhir", json=example, headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    responses = [e["response"] for e in out["entry"]]
    assert [x["status"].split()[0] for x in responses] == [
        "201",
        "200",
        "201",
        "200",
        "200",
        "204",
        "204",
        "200",
        "304",
    ]

    # 0: plain create under its urn:uuid.
    assert responses[0]["location"] == f"Patient/{first_uuid}/_history/1"
    # 1: conditional create found the patient with identifier 234234 and created nothing.
    assert responses[1]["location"] == f"Patient/{made['234234']}/_history/1"
    assert (await client.get(f"/fhir/Patient/{made['234234']}")).json()["name"][0]["family"] == "Existing"
    # 2: update as create with the client's id.
    assert responses[2]["location"] == "Patient/123/_history/1"
    # 3: conditional update of the patient with identifier 456456.
    assert responses[3]["location"] == f"Patient/{made['456456']}/_history/2"
    updated = (await client.get(f"/fhir/Patient/{made['456456']}")).json()
    assert updated["name"][0]["family"] == "Chalmers"
    # 4: update with ifMatch W/"2".
    assert responses[4]["location"] == "Patient/123a/_history/3"
    # 5, 6: delete and conditional delete.
    assert (await client.get("/fhir/Patient/234")).status_code == 410
    assert (await client.get(f"/fhir/Patient/{made['123456']}")).status_code == 410
    # 7: the search runs after the writes and sees them: entries 0, 2, 3 and 4 are named Peter.
    search = out["entry"][7]["resource"]
    assert search["type"] == "searchset"
    found = {e["resource"]["id"] for e in search.get("entry", []) if e["search"]["mode"] == "match"}
    assert found == {first_uuid, "123", made["456456"], "123a"}
    # 8: GET with ifNoneMatch of the current version.
    assert responses[8]["etag"] == 'W/"4"'

    # Nothing else was created: of the 6 patients prepared 2 were deleted, entries 0 and 2 were
    # created, and entries 1 and 3 reused the patients they matched.
    prepared = len(made) + 3  # + 123a, 234, 12334
    r = await client.get("/fhir/Patient?_summary=count")
    assert r.json()["total"] == prepared - 2 + 2


# -- conditional references -------------------------------------------------------------------------


async def test_conditional_references_resolve(client: httpx.AsyncClient) -> None:
    system, value = "urn:test:condref", new_uuid()
    identifier = [{"system": system, "value": value}]
    target = (await client.post("/fhir/Patient", json=patient("Target", identifier=identifier))).json()
    criteria = f"Patient?identifier={system}|{value}"
    obs_uuid, second_uuid = new_uuid(), new_uuid()
    r = await client.post(
        "/fhir",
        json=bundle(
            "transaction",
            post(observation(criteria), f"urn:uuid:{obs_uuid}"),
            post(observation(criteria), f"urn:uuid:{second_uuid}"),
        ),
        headers=FHIR,
    )
    assert r.status_code == 200, r.text
    for oid in (obs_uuid, second_uuid):
        stored = (await client.get(f"/fhir/Observation/{oid}")).json()
        assert stored["subject"]["reference"] == f"Patient/{target['id']}"
    r = await client.get(f"/fhir/Observation?subject=Patient/{target['id']}")
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {obs_uuid, second_uuid}

    # Two matches: the reference is ambiguous and the transaction fails, naming the entry.
    await client.post("/fhir/Patient", json=patient("Twin", identifier=identifier))
    before = await versions(client)
    r = await client.post(
        "/fhir", json=bundle("transaction", post(patient("X")), post(observation(criteria)))
    )
    assert r.status_code == 412, r.text
    assert "entry 1" in diagnostics(r)
    assert await versions(client) == before


# -- batch --------------------------------------------------------------------------------------------


async def test_batch_reports_each_entry_and_keeps_the_good_ones(client: httpx.AsyncClient) -> None:
    good_uuid, put_id = new_uuid(), f"batch-{new_uuid()[:8]}"
    existing = (await client.post("/fhir/Patient", json=patient("ToDelete"))).json()
    entries = [
        post(patient("BatchGood"), f"urn:uuid:{good_uuid}"),
        post(patient("BatchBad", birthDate="not a date")),
        put(patient("BatchPut", id=put_id)),
        {"request": {"method": "GET", "url": f"Patient/missing-{new_uuid()}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
        put(patient("BatchStale", id=put_id), ifMatch='W/"5"'),
        {"request": {"method": "GET", "url": f"Patient/{put_id}"}},
    ]
    before = await versions(client)
    r = await client.post("/fhir", json=bundle("batch", *entries), headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "batch-response"
    assert len(out["entry"]) == len(entries)
    statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert statuses == ["201", "400", "201", "404", "204", "412", "200"]
    for n in (1, 3, 5):
        outcome = out["entry"][n]["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome"
    assert out["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == ["Patient.birthDate"]
    assert out["entry"][6]["resource"]["name"][0]["family"] == "BatchPut"

    assert (await client.get(f"/fhir/Patient/{good_uuid}")).status_code == 200
    assert (await client.get(f"/fhir/Patient/{put_id}")).json()["meta"]["versionId"] == "1"
    assert (await client.get(f"/fhir/Patient/{existing['id']}")).status_code == 410
    assert await versions(client) == before + 3  # create, put, delete


async def test_a_batch_of_creates_keeps_each_valid_one_and_commits_its_event_with_them(
    client: httpx.AsyncClient,
) -> None:
    """The creates are validated chunk by chunk as they are stored: an invalid one in the second
    chunk is that entry's error alone; the request's audit event commits with the creates."""
    pid = (await client.post("/fhir/Patient", json=patient("BatchOwner"))).json()["id"]
    entries = [post(observation(f"Patient/{pid}"), f"urn:uuid:{new_uuid()}") for _ in range(60)]
    entries[55]["resource"]["effectiveDateTime"] = "not a date"
    r = await client.post("/fhir", json=bundle("batch", *entries), headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [e["response"]["status"].split()[0] for e in out] == ["201"] * 55 + ["400"] + ["201"] * 4
    assert out[55]["response"]["outcome"]["issue"][0]["expression"] == ["Observation.effectiveDateTime"]
    stored = [e["response"]["location"].split("/")[1] for e in out if "location" in e["response"]]
    state = client._transport.app.state  # type: ignore[attr-defined]
    async with state.db.reader() as conn:
        rows = await conn.fetch("SELECT event FROM audit_log WHERE patient_id = $1 ORDER BY seq", pid)
        if state.db.dialect == "postgresql":
            written_by = await conn.fetch(
                "SELECT DISTINCT xmin::text FROM resource WHERE res_id = ANY($1::text[]) UNION "
                "SELECT xmin::text FROM audit_log WHERE patient_id = $2 AND seq = "
                "(SELECT max(seq) FROM audit_log WHERE patient_id = $2)",
                stored, pid,
            )  # fmt: skip
            assert len(written_by) == 1
    event = json.loads(bytes(rows[-1][0]))
    named = {
        x["what"]["reference"].split("/")[1]
        for x in event["entity"]
        if x["what"]["reference"].startswith("Obs")
    }
    assert named <= set(stored) and len(named) == 50  # an event names the first 50 resources
    found = await client.get(f"/fhir/Observation?subject=Patient/{pid}&_summary=count")
    assert found.json()["total"] == 59


async def test_a_transaction_names_each_patient_their_own_resources_and_sends_its_event_with_the_last_chunk(
    client: httpx.AsyncClient,
) -> None:
    """Each patient's audit event names that patient's resources, not the other patients' (every
    event used to name every resource of the Bundle); on PostgreSQL the event goes out in the same
    statement as the last chunk of creates: the existing-id probe and two chunks (10 and 30)."""
    ada, bob = [(await client.post("/fhir/Patient", json=patient(n))).json()["id"] for n in ("Ada", "Bob")]
    entries = [
        post(observation(f"Patient/{ada if n % 4 else bob}"), f"urn:uuid:{new_uuid()}") for n in range(40)
    ]
    state = client._transport.app.state  # type: ignore[attr-defined]
    await sink_for(state).close()  # earlier tests' read events, which are stored after their answers
    before = state.db.counter.statements
    r = await client.post("/fhir", json=bundle("transaction", *entries), headers=FHIR)
    assert r.status_code == 200, r.text
    if state.db.dialect == "postgresql":
        assert state.db.counter.statements - before == 3
    created = [e["response"]["location"].split("/")[1] for e in r.json()["entry"]]
    whose = {created[n]: ada if n % 4 else bob for n in range(40)}
    async with state.db.reader() as conn:
        for pid in (ada, bob):
            row = await conn.fetchrow(
                "SELECT event FROM audit_log WHERE patient_id = $1 ORDER BY seq DESC LIMIT 1", pid
            )
            event = json.loads(bytes(row[0]))
            named = [
                x["what"]["reference"].split("/")[1]
                for x in event["entity"]
                if x["what"]["reference"].startswith("Observation/")
            ]
            assert sorted(named) == sorted(o for o, p in whose.items() if p == pid)


# -- limits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["transaction", "batch"])
async def test_too_many_entries_is_413(client: httpx.AsyncClient, kind: str) -> None:
    limit = client._transport.app.state.settings.max_bundle_entries  # type: ignore[attr-defined]
    assert limit < 10_001
    entries = [post(patient(f"Many{n}"), f"urn:uuid:{new_uuid()}") for n in range(10_001)]
    before = await versions(client)
    r = await client.post("/fhir", json=bundle(kind, *entries), headers=FHIR)
    assert r.status_code == 413, r.text[:500]
    assert "10001" in diagnostics(r)
    assert await versions(client) == before
    # At the limit it is accepted (the 413 is the limit, not the size of the body).
    r = await client.post("/fhir", json=bundle(kind, *entries[:limit]), headers=FHIR)
    assert r.status_code == 200, r.text[:500]


def nested_arrays(depth: int) -> bytes:
    return b'{"resourceType":"Patient","extension":' + b"[" * depth + b"]" * depth + b"}"


def nested_extensions(levels: int) -> bytes:
    node: dict[str, Any] = {"url": "http://example.org/x", "valueString": "deep"}
    for _ in range(levels):
        node = {"url": "http://example.org/x", "extension": [node]}
    return json.dumps({"resourceType": "Patient", "extension": [node]}).encode()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("5000 nested arrays", nested_arrays(5000)),
        ("1000 nested arrays", nested_arrays(1000)),
        # Valid FHIR shape, within orjson's read limit (1024) but past its write limit (254):
        # this used to be a 500 when the store serialized it.
        ("150 levels of nested extensions", nested_extensions(150)),
    ],
)
async def test_deep_json_is_400(client: httpx.AsyncClient, name: str, body: bytes) -> None:
    in_bundle = b'{"resourceType":"Bundle","type":"%s","entry":[{"request":{"method":"POST","url":"Patient"},'
    in_bundle += b'"resource":'
    before = await versions(client)
    requests = [
        ("POST", "/fhir/Patient", body),
        ("PUT", "/fhir/Patient/deep-json", body.replace(b'"Patient",', b'"Patient","id":"deep-json",', 1)),
        ("POST", "/fhir", in_bundle % b"transaction" + body + b"}]}"),
        ("POST", "/fhir", in_bundle % b"batch" + body + b"}]}"),
        ("POST", "/fhir/Patient/$validate", body),
    ]
    for method, url, content in requests:
        r = await client.request(method, url, content=content, headers=FHIR)
        assert r.status_code == 400, f"{name}: {method} {url}: {r.status_code} {r.text[:300]}"
        assert r.json()["resourceType"] == "OperationOutcome"
    assert await versions(client) == before


async def test_nesting_within_the_limit_is_stored(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient", content=nested_extensions(100), headers=FHIR)
    assert r.status_code == 201, r.text[:300]
    assert r.json()["extension"] == json.loads(nested_extensions(100))["extension"]


async def test_count_above_max_is_400(client: httpx.AsyncClient) -> None:
    maximum = client._transport.app.state.settings.max_count  # type: ignore[attr-defined]
    pid = (await client.post("/fhir/Patient", json=patient("Counted"))).json()["id"]
    for path in (
        "/fhir/Patient",
        "/fhir/Patient/_history",
        "/fhir/_history",
        f"/fhir/Patient/{pid}/_history",
    ):
        r = await client.get(f"{path}?_count={maximum + 1}")
        assert r.status_code == 400, f"{path}: {r.status_code}"
        assert r.json()["resourceType"] == "OperationOutcome"
        r = await client.get(f"{path}?_count=-1")
        assert r.status_code == 400, f"{path} _count=-1: {r.status_code}"
        r = await client.get(f"{path}?_count={maximum}")
        assert r.status_code == 200, f"{path} at the maximum: {r.status_code} {r.text[:200]}"
    r = await client.post("/fhir/Patient/_search", content=f"_count={maximum + 1}".encode(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 400, r.text


async def test_batch_resolves_references_entry_by_entry(client: httpx.AsyncClient) -> None:
    """Each batch entry is processed as if on its own: a conditional reference resolves to the one
    resource it matches; a reference to another entry of the batch is that entry's error (it used to
    be stored as written, a dangling ``urn:uuid:`` or ``Patient?identifier=`` reference)."""
    system, value = "urn:test:batchref", new_uuid()
    identifier = [{"system": system, "value": value}]
    target = (await client.post("/fhir/Patient", json=patient("Target", identifier=identifier))).json()
    sibling = new_uuid()
    put_id = f"batchref-{new_uuid()[:8]}"
    entries = [
        post(patient("Sibling"), f"urn:uuid:{sibling}"),
        post(observation(f"Patient?identifier={system}|{value}")),
        post(observation(f"urn:uuid:{sibling}")),
        post(observation(f"Patient?identifier={system}|no-such-{value}")),
        put({**observation(f"Patient?identifier={system}|{value}"), "id": put_id}),
    ]
    r = await client.post("/fhir", json=bundle("batch", *entries), headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [e["response"]["status"].split()[0] for e in out] == ["201", "201", "400", "412", "201"]
    assert "cannot refer to each other" in out[2]["response"]["outcome"]["issue"][0]["diagnostics"]
    for n in (1, 4):
        location = out[n]["response"]["location"].rsplit("/_history", 1)[0]
        stored = (await client.get(f"/fhir/{location}")).json()
        assert stored["subject"]["reference"] == f"Patient/{target['id']}"
    r = await client.get(f"/fhir/Observation?subject=Patient/{target['id']}&_summary=count")
    assert r.json()["total"] == 2


async def test_json_patch_past_the_nesting_limit_is_422(client: httpx.AsyncClient) -> None:
    """Each part is within the limit, the patched whole is not: refused, not a 500."""
    pid = f"deep-patch-{new_uuid()[:8]}"
    resource = json.loads(nested_extensions(100)) | {"id": pid}
    assert (await client.put(f"/fhir/Patient/{pid}", json=resource, headers=FHIR)).status_code == 201
    deepest = "/extension/0" * 101
    value = json.loads(nested_extensions(100))["extension"][0]
    r = await client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "replace", "path": deepest, "value": value}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 422, r.text[:300]
    assert r.json()["resourceType"] == "OperationOutcome"
    r = await client.get(f"/fhir/Patient/{pid}")
    assert r.json()["meta"]["versionId"] == "1"


async def test_a_deleted_identity_is_created_again_by_the_same_bundle(client: httpx.AsyncClient) -> None:
    full_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": {"resourceType": "Patient", "name": [{"family": "Reloaded"}]},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    pid = full_url.removeprefix("urn:uuid:")
    first = (await client.post("/fhir", json=bundle)).json()["entry"][0]["response"]
    assert first["status"].startswith("201")
    assert (await client.delete(f"/fhir/Patient/{pid}")).status_code == 204
    again = await client.post("/fhir", json=bundle)
    assert again.status_code == 200, again.text
    assert again.json()["entry"][0]["response"]["status"].startswith("201")
    read = await client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200 and read.json()["meta"]["versionId"] == "3"
