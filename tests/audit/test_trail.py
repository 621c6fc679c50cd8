"""The trail on both engines: append-only, hash-chained, sealed after commit, verified by the CLI,
kept by backup and restore, and queried for "who looked at my record"."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from housecall.access.actor import Actor, ActorKind, Role
from housecall.audit import chain, trail
from housecall.audit.events import AuditRequest, Outcome, entries_for
from housecall.core.db import Database, DatabaseURL, open_database
from tests.cli.test_cli import flat, hc

ORG = "org-audit"
DOCTOR = Actor(ActorKind.PRACTITIONER, ORG, account_id="d-acct", roles=frozenset({Role.CLINICIAN}),
               fhir_user="Practitioner/d1", session_id="s1")  # fmt: skip
PATIENT = Actor(ActorKind.PATIENT, ORG, account_id="p-acct", fhir_user="Patient/p1", patient_id="p1")


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[Database]:
    database = open_database(fresh_database_url)
    await database.connect()
    yield database
    await database.close()


def reads(actor: Actor, patient: str, n: int, outcome: Outcome = Outcome.SUCCESS) -> list[trail.AuditEntry]:
    out = []
    for i in range(n):
        out += entries_for(actor, AuditRequest("read", "Observation", f"o{i}"), outcome, patient_ids=[patient],
                           what=[f"Observation/o{i}/_history/1"])  # fmt: skip
    return out


async def append(db: Database, entries: list[trail.AuditEntry]) -> None:
    async with db.transaction() as conn:
        await trail.append(conn, entries)


async def write(db: Database, sql: str) -> None:
    """One statement through the application's own unit of work."""
    async with db.transaction() as conn:
        await conn.execute(sql)
        await conn.fetchval("SELECT 1")  # on PostgreSQL a lone first write is only sent at the end


def raw_sql(url: str, *statements: str) -> None:
    """Run SQL as the database owner, going around the application (and its triggers if told)."""
    parsed = DatabaseURL.parse(url)
    if parsed.dialect == "sqlite":
        conn = sqlite3.connect(parsed.path, isolation_level=None)
        try:
            for s in statements:
                conn.execute(s)
        finally:
            conn.close()
    else:
        with psycopg.connect(parsed.path, autocommit=True) as pg:
            for s in statements:
                pg.execute(s)  # type: ignore[arg-type]


def flip_byte(url: str, seq: int) -> None:
    if url.startswith("sqlite"):
        raw_sql(
            url,
            "DROP TRIGGER audit_log_no_update",
            f"UPDATE audit_log SET event = CAST(replace(CAST(event AS TEXT), '\"R\"', '\"D\"') AS BLOB) WHERE seq = {seq}",
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END",
        )
    else:
        raw_sql(
            url,
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
            f"UPDATE audit_log SET event = set_byte(event, 40, get_byte(event, 40) # 1) WHERE seq = {seq}",
            "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only",
        )


async def test_update_delete_truncate_are_refused(db: Database, fresh_database_url: str) -> None:
    await append(db, reads(DOCTOR, "p1", 3))
    await chain.seal_all(db)
    statements = [
        "UPDATE audit_log SET patient_id = 'p2'",
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log",
        "UPDATE audit_seal SET hash = hash",
        "DELETE FROM audit_seal",
    ]
    if db.dialect == "postgresql":
        statements += ["TRUNCATE audit_log", "TRUNCATE audit_seal"]
    for sql in statements:
        with pytest.raises(Exception, match="append-only"):
            await write(db, sql)
    async with db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 3
        assert await conn.fetchval("SELECT count(*) FROM audit_seal") == 3
        assert (await chain.verify(conn)).ok


async def test_flipped_byte_is_found_by_verify(db: Database, fresh_database_url: str) -> None:
    await append(db, reads(DOCTOR, "p1", 5))
    assert await chain.seal_all(db) == 5
    ok = hc(fresh_database_url, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "5 audit events verify" in flat(ok.stdout)
    flip_byte(fresh_database_url, 3)
    broken = hc(fresh_database_url, "audit", "verify")
    assert broken.returncode == 1
    assert "audit chain broken at seq 3" in flat(broken.stderr)
    async with db.reader() as conn:
        verdict = await chain.verify(conn)
    assert (verdict.broken_seq, verdict.sealed) == (3, 2)


async def test_deleted_event_and_edited_seal_are_found(db: Database, fresh_database_url: str) -> None:
    await append(db, reads(DOCTOR, "p1", 4))
    await chain.seal_all(db)
    if db.dialect == "sqlite":
        raw_sql(fresh_database_url, "DROP TRIGGER audit_log_no_delete", "DELETE FROM audit_log WHERE seq = 2")
    else:
        raw_sql(
            fresh_database_url,
            "SET session_replication_role = replica",
            "DELETE FROM audit_log WHERE seq = 2",
        )
    async with db.reader() as conn:
        verdict = await chain.verify(conn)
    assert (verdict.broken_seq, verdict.problem) == (2, "the sealed event is missing (deleted)")


async def test_events_committed_late_are_sealed_on_a_later_pass(db: Database) -> None:
    if db.dialect == "sqlite":
        pytest.skip("SQLite has one writer: a later event cannot commit before an earlier one")
    # A write transaction appends its event (seq 1) and stays open while later events commit.
    conn_cm = db.transaction()
    slow = await conn_cm.__aenter__()
    await slow.fetchval("SELECT 1")  # open the transaction
    await trail.append(slow, reads(DOCTOR, "p1", 1))
    await append(db, reads(DOCTOR, "p2", 3))
    assert await chain.seal_all(db, full=False) == 3
    await conn_cm.__aexit__(None, None, None)
    async with db.reader() as conn:
        verdict = await chain.verify(conn)
    assert verdict.ok and verdict.sealed == 3 and verdict.unsealed == 1 and verdict.unsealed_seqs == [1]
    assert await chain.seal_all(db, full=False) == 1
    async with db.reader() as conn:
        verdict = await chain.verify(conn)
        order = [r[0] for r in await conn.fetch("SELECT seq FROM audit_seal ORDER BY pos")]
    assert verdict.ok and verdict.sealed == 4 and verdict.unsealed == 0
    assert order == [2, 3, 4, 1]


async def test_the_servers_full_pass_seals_events_outside_the_window(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain, "LOOKBACK", 2)

    async def insert_at(seq: int) -> None:
        (e,) = reads(DOCTOR, "p1", 1)
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO audit_log (seq, org_id, recorded, patient_id, agent, event) VALUES ($1, $2, $3, $4, $5, $6)",
                seq, e.org_id, e.recorded, e.patient_id, e.agent, e.event,
            )  # fmt: skip

    for seq in (1, 3, 4, 5, 6, 7, 8):
        await insert_at(seq)
    sealer = chain.Sealer(db)
    assert await sealer.seal_pending() == 7
    await insert_at(2)  # an event whose transaction committed long after its seq was taken
    assert await sealer.seal_pending() == 0  # below the recent window (LOOKBACK)
    assert await sealer.seal_pending(full=True) == 1
    async with db.reader() as conn:
        verdict = await chain.verify(conn)
    assert verdict.ok and verdict.sealed == 8 and verdict.unsealed == 0


async def test_verify_reports_unsealed_events(db: Database, fresh_database_url: str) -> None:
    await append(db, reads(DOCTOR, "p1", 2))
    await chain.seal_all(db)
    await append(db, reads(DOCTOR, "p1", 3))
    out = hc(fresh_database_url, "audit", "verify")
    assert out.returncode == 0, out.stderr
    assert "2 audit events verify" in flat(out.stdout) and "3 events are not sealed yet" in flat(out.stdout)
    sealed = hc(fresh_database_url, "audit", "verify", "--seal")
    assert "sealed 3 pending events" in flat(sealed.stdout) and "5 audit events verify" in flat(sealed.stdout)
    assert "not sealed" not in sealed.stdout


async def test_backup_restore_keeps_the_chain(db: Database, fresh_database_url: str, tmp_path: Path) -> None:
    await append(db, reads(DOCTOR, "p1", 4))
    await chain.seal_all(db)
    await db.close()
    backup = tmp_path / "audit.backup"
    assert hc(fresh_database_url, "backup", str(backup)).returncode == 0
    raw_sql(fresh_database_url, "INSERT INTO audit_log (org_id, recorded, event) VALUES ('x', 1, 'x')")
    restored = hc(fresh_database_url, "restore", "--yes", str(backup))
    assert restored.returncode == 0, restored.stderr
    out = hc(fresh_database_url, "audit", "verify")
    assert out.returncode == 0, out.stderr
    assert "4 audit events verify" in flat(out.stdout) and "not sealed" not in out.stdout
    # The restored tables are still append-only.
    await db.connect()
    with pytest.raises(Exception, match="append-only"):
        await write(db, "DELETE FROM audit_log")


async def test_who_viewed_lists_accesses_to_one_patient_newest_first(
    db: Database, fresh_database_url: str
) -> None:
    await append(db, reads(DOCTOR, "p1", 2))
    await append(db, reads(DOCTOR, "p2", 1))
    await append(db, reads(PATIENT, "p1", 1))
    other_org = Actor(ActorKind.PRACTITIONER, "org-other", fhir_user="Practitioner/x")
    await append(db, reads(other_org, "p1", 1))
    async with db.reader() as conn:
        seen = await trail.who_viewed(conn, ORG, "p1")
        others = await trail.who_viewed(conn, ORG, "p1", exclude_agent="Patient/p1")
        recent = await trail.who_viewed(conn, ORG, "p1", since=seen[0].recorded)
    assert [a.agent for a in seen] == ["Patient/p1", "Practitioner/d1", "Practitioner/d1"]
    assert [a.agent for a in others] == ["Practitioner/d1", "Practitioner/d1"]
    assert [a.agent for a in recent] == ["Patient/p1"]
    first = others[0]
    assert first.action == "R" and first.interaction == "read" and first.outcome == "0"
    assert first.what == ["Observation/o1/_history/1"] and "clinician" in first.agent_display
    show = hc(fresh_database_url, "audit", "show", "--patient", "p1", "--org", ORG)
    assert show.returncode == 0, show.stderr
    assert flat(show.stdout).count("Practitioner/d1") == 2 and "Patient/p1" in show.stdout


async def test_sink_group_commits_concurrent_events(db: Database) -> None:
    sink = trail.AuditSink(db)
    before = db.counter.statements
    await asyncio.gather(*(sink.record(reads(DOCTOR, f"p{i}", 1), wait=True) for i in range(40)))
    async with db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 40
    # 40 events in far fewer than 40 inserts (the first goes alone, the rest queue behind it).
    assert db.counter.statements - before < 20


async def test_sink_without_waiting_stores_events_by_close(db: Database) -> None:
    sink = trail.AuditSink(db)
    for i in range(25):
        await sink.record(reads(PATIENT, "p1", 1), wait=False)
    await sink.close()
    async with db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 25


async def test_urgent_events_are_committed_when_record_returns(db: Database) -> None:
    sink = trail.AuditSink(db)
    denied = reads(DOCTOR, "p1", 1, Outcome.MINOR_FAILURE)
    assert denied[0].urgent
    await sink.record(denied)
    async with db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1
    allowed = reads(DOCTOR, "p1", 1)
    assert not allowed[0].urgent
    await sink.record(allowed)  # returns before the commit; the next batch carries it
    await sink.close()
    async with db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2


async def test_the_application_sink_can_be_told_to_wait_for_reads(db: Database) -> None:
    from types import SimpleNamespace

    from housecall.core.settings import Settings

    strict = SimpleNamespace(db=db, settings=Settings(audit_wait_for_reads=True))
    relaxed = SimpleNamespace(db=db, settings=Settings())
    assert trail.sink_for(strict).wait_always and not trail.sink_for(relaxed).wait_always
    assert trail.sink_for(strict) is trail.sink_for(strict)
    await trail.sink_for(strict).record(reads(DOCTOR, "p1", 1))
    async with db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_sink_reports_a_failed_commit_to_the_waiting_request(db: Database) -> None:
    sink = trail.AuditSink(db)
    bad = trail.AuditEntry(None, 1, None, None, b"{}")  # type: ignore[arg-type]  # org_id is NOT NULL
    with pytest.raises(Exception, match=r"(?i)null"):
        await sink.record([bad])
    await sink.record(reads(PATIENT, "p1", 1), wait=True)  # the sink goes on
    async with db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_server_sealer_links_new_events(db: Database) -> None:
    sealer = chain.Sealer(db, interval=0.05)
    sealer.start()
    try:
        await append(db, reads(DOCTOR, "p1", 3))
        for _ in range(100):
            async with db.reader() as conn:
                if await conn.fetchval("SELECT count(*) FROM audit_seal") == 3:
                    break
            await asyncio.sleep(0.05)
    finally:
        await sealer.stop()
    async with db.reader() as conn:
        verdict = await chain.verify(conn)
    assert verdict.ok and verdict.sealed == 3 and verdict.unsealed == 0
