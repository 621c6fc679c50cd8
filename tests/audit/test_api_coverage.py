"""Every FHIR request that reaches data leaves an attributed AuditEvent - allowed, missing and
refused alike - and none of them holds the searched name or the token (SECURITY.md rows 1, 10)."""

from __future__ import annotations

import httpx
import orjson

from housecall.audit import chain
from housecall.core.db import open_database

CANARY = "Wxyq-Canary-Family-5521"


async def test_each_request_leaves_one_attributed_event(
    fresh_client: httpx.AsyncClient, fresh_database_url: str
) -> None:
    db = open_database(fresh_database_url)
    await db.connect()
    try:
        async with db.reader() as conn:
            before = await conn.fetchval("SELECT count(*) FROM audit_log")
        created = await fresh_client.post(
            "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": CANARY}]}
        )
        assert created.status_code == 201
        pid = created.json()["id"]
        requests = [
            ("GET", f"/fhir/Patient/{pid}", 200, "read"),
            ("GET", f"/fhir/Patient/{pid}/_history/1", 200, "vread"),
            ("GET", f"/fhir/Patient?family={CANARY}", 200, "search-type"),
            ("GET", f"/fhir/Patient/{pid}/_history", 200, "history-instance"),
            ("GET", "/fhir/Patient/does-not-exist", 404, "read"),
            ("DELETE", f"/fhir/Patient/{pid}", 204, "delete"),
        ]
        for method, path, status, _ in requests:
            r = await fresh_client.request(method, path)
            assert r.status_code == status, (path, r.status_code)
        await db_sink_settled(fresh_client)
        async with db.reader() as conn:
            rows = await conn.fetch(
                "SELECT seq, patient_id, agent, event FROM audit_log WHERE seq > $1 ORDER BY seq", before or 0
            )
        events = [orjson.loads(bytes(r[3])) for r in rows]
        token = fresh_client.headers["Authorization"].split()[1]
        # One event per request (each touched one patient). Writes and denials are committed
        # before their answer, successful reads just after it, so compare as sets.
        asked = [f"{e['subtype'][0]['code']} {e['outcome']}" for e in events]
        expected = ["create 0"] + [f"{i} {'4' if status == 404 else '0'}" for _, _, status, i in requests]
        assert sorted(asked) == sorted(expected)
        for row, event in zip(rows, events, strict=True):
            raw = bytes(row[3]).decode()
            assert CANARY not in raw and token not in raw
            assert row[2], f"event {row[0]} names no agent"
            requestor = [a for a in event["agent"] if a["requestor"]]
            assert len(requestor) == 1 and requestor[0]["who"], event["agent"]
            assert event["source"]["site"]
            if event["outcome"] == "0":
                assert row[1] == pid
            else:  # the missing Patient: no patient, the id that was asked for
                assert [e["what"]["reference"] for e in event["entity"]] == ["Patient/does-not-exist"]
        assert await chain.seal_all(db) == len(rows) + (before or 0)
        async with db.reader() as conn:
            verdict = await chain.verify(conn)
        assert verdict.ok and verdict.unsealed == 0
    finally:
        await db.close()


async def db_sink_settled(client: httpx.AsyncClient) -> None:
    """Wait for the events of successful reads, which the requests did not wait for."""
    from housecall.audit.trail import sink_for

    app = client._transport.app  # type: ignore[attr-defined]
    await sink_for(app.state).close()
