#!/usr/bin/env python3
"""What auditing every read costs, side by side in one run, on PostgreSQL and SQLite.

Eight concurrent clients in one process (uvloop, the server's loop) read one Observation by id,
the statement the store runs for a FHIR read, in five ways:

- ``read``: the read alone (the floor);
- ``read + insert``: then one plain INSERT of the AuditEvent on the same connection, autocommit -
  what any audit row costs, with nothing shared between requests;
- ``read + sink, waiting``: the event goes to ``AuditSink``, which group-commits the events of
  concurrent requests in one INSERT, while the ``Sealer`` links them to the hash chain every
  second in the background; the read waits for the commit (what writes and denials do);
- ``read + sink, not waiting`` (what Housecall does for a successful read): the same, but the
  response does not wait for the commit: a crash loses the last few milliseconds of events;
- ``read + chain in tx``: the obvious alternative - the read's transaction locks the chain head,
  hashes the event onto it and inserts it: one global lock held until commit;

The phases run interleaved in five rounds (each figure is the median of its rounds), so the
machine's changing load touches all of them alike. The figures are in-process: a FHIR read over
HTTP also spends ≈0.4 ms of server CPU in parsing and rendering, so compare the *added* time per
read with the HTTP budget (1/1,200 s - 1/measured HTTP read rate). 127.0.0.1 only.

    .venv/bin/python bench/bench_audit.py [--engines postgresql,sqlite] [--reads 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from housecall.access.actor import Actor, ActorKind, Role  # noqa: E402
from housecall.audit import chain, trail  # noqa: E402
from housecall.audit.events import AuditRequest, Outcome, entries_for  # noqa: E402
from housecall.core import migrate  # noqa: E402
from housecall.core.db import Conn, Database, open_database  # noqa: E402

PG_ADMIN = os.environ.get("HOUSECALL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
ROUNDS = 5
N_RESOURCES = 500
ACTOR = Actor(ActorKind.PRACTITIONER, "org-bench", account_id="acct-1", roles=frozenset({Role.CLINICIAN}),
              fhir_user="Practitioner/d1", client_id="app-1", session_id="sess-1")  # fmt: skip
# A copy of the resource table's shape (its own table, so the bench does not follow the store's
# columns as they change): the read is the same primary-key probe.
READ_SQL = (
    "SELECT version, last_updated, deleted, content FROM bench_resource WHERE res_type = $1 AND res_id = $2"
)


def new_url(engine: str, tmp: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp / f'audit-bench-{uuid.uuid4().hex[:6]}.db'}"
    name = f"hc_bench_audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop(url: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


async def seed(db: Database) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(N_RESOURCES)]
    async with db.transaction() as conn:
        await conn.execute(
            "CREATE TABLE bench_resource (res_type VARCHAR(64), res_id VARCHAR(64), version INTEGER, "
            "last_updated BIGINT, deleted BOOLEAN, content BYTEA, PRIMARY KEY (res_type, res_id))"
        )
        await conn.executemany(
            "INSERT INTO bench_resource (res_type, res_id, version, last_updated, deleted, content) "
            "VALUES ('Observation', $1, 1, 1, false, $2)",
            [
                (
                    i,
                    orjson.dumps(
                        {
                            "resourceType": "Observation",
                            "id": i,
                            "status": "final",
                            "subject": {"reference": "Patient/p1"},
                        }
                    ),
                )
                for i in ids
            ],
        )
        # The chain-in-transaction alternative keeps its head in a one-row table.
        await conn.execute("CREATE TABLE bench_chain_head (id INTEGER PRIMARY KEY, pos BIGINT, hash BYTEA)")
        await conn.execute("INSERT INTO bench_chain_head VALUES (1, 0, $1)", bytes(32))
        await conn.execute("CREATE TABLE bench_chained (pos BIGINT PRIMARY KEY, event BYTEA, hash BYTEA)")
    return ids


def entries(res_id: str) -> list[trail.AuditEntry]:
    return entries_for(ACTOR, AuditRequest("read", "Observation", res_id, address="127.0.0.1"),
                       Outcome.SUCCESS, patient_ids=["p1"], what=[f"Observation/{res_id}/_history/1"])  # fmt: skip


async def read(conn: Conn, res_id: str) -> None:
    row = await conn.fetchrow(READ_SQL, "Observation", res_id)
    assert row is not None


def phases(db: Database, sink: trail.AuditSink) -> dict[str, Callable[[str], Awaitable[None]]]:
    async def plain(res_id: str) -> None:
        async with db.reader() as conn:
            await read(conn, res_id)

    async def with_insert(res_id: str) -> None:
        async with db.reader() as conn:
            await read(conn, res_id)
            await trail.append(conn, entries(res_id))

    async def with_sink(res_id: str) -> None:
        async with db.reader() as conn:
            await read(conn, res_id)
        await sink.record(entries(res_id), wait=True)

    async def with_sink_no_wait(res_id: str) -> None:
        async with db.reader() as conn:
            await read(conn, res_id)
        await sink.record(entries(res_id))  # a successful read's event is not urgent

    async def chained_in_tx(res_id: str) -> None:
        async with db.transaction() as conn:
            await read(conn, res_id)
            (entry,) = entries(res_id)
            head = await conn.fetchrow("SELECT pos, hash FROM bench_chain_head WHERE id = 1 FOR UPDATE"
                                       if conn.dialect == "postgresql" else
                                       "SELECT pos, hash FROM bench_chain_head WHERE id = 1")  # fmt: skip
            assert head is not None
            pos, digest = int(head[0]) + 1, hashlib.sha256(bytes(head[1]) + entry.event).digest()
            await conn.execute("INSERT INTO bench_chained VALUES ($1, $2, $3)", pos, entry.event, digest)
            await conn.execute("UPDATE bench_chain_head SET pos = $1, hash = $2 WHERE id = 1", pos, digest)

    return {"read": plain, "read + insert": with_insert, "read + sink, waiting": with_sink,
            "read + sink, not waiting": with_sink_no_wait,
            "read + chain in tx": chained_in_tx}  # fmt: skip


async def run_phase(
    fn: Callable[[str], Awaitable[None]],
    ids: list[str],
    per_client: int,
    after: Callable[[], Awaitable[None]],
) -> float:
    """Reads per second, counting until ``after`` (every queued audit event committed) is done."""

    async def client(k: int) -> None:
        for i in range(per_client):
            await fn(ids[(k * 7919 + i) % len(ids)])

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    await after()
    return CLIENTS * per_client / (time.perf_counter() - start)


async def bench_engine(engine: str, per_client: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = new_url(engine, Path(tmp))
        try:
            migrate.upgrade(url)
            db = open_database(url, pool_size=10)  # the server's default pool
            await db.connect()
            try:
                ids = await seed(db)
                sink = trail.AuditSink(db)
                sealer = chain.Sealer(db, interval=1.0)
                sealer.start()
                # Rounds interleave the phases, so a change in the machine's load during the run
                # touches all of them; each figure is the median of its rounds.
                runs: dict[str, list[float]] = {name: [] for name in phases(db, sink)}
                for _ in range(ROUNDS):
                    for name, fn in phases(db, sink).items():
                        runs[name].append(await run_phase(fn, ids, per_client, sink.close))
                results: dict[str, float] = {name: statistics.median(r) for name, r in runs.items()}
                await sealer.stop()
                async with db.reader() as conn:
                    verdict = await chain.verify(conn)
                assert verdict.ok, verdict
                assert verdict.unsealed == 0, verdict
                results["events sealed and verified"] = verdict.sealed
            finally:
                await db.close()
        finally:
            drop(url)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="postgresql,sqlite")
    parser.add_argument("--reads", type=int, default=400, help="reads per client per phase and round")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    load = os.getloadavg()[0]
    table: dict[str, dict[str, float]] = {}
    for engine in args.engines.split(","):
        table[engine] = asyncio.run(bench_engine(engine, args.reads))
    print(f"\n{CLIENTS} clients, {args.reads} reads each per phase, median of {ROUNDS} interleaved rounds, "
          f"load average at start {load:.2f}\n")  # fmt: skip
    engines = list(table)
    print("| phase | " + " | ".join(f"{e} reads/s | added µs/read" for e in engines) + " |")
    print("|---|" + "---|---|" * len(engines))
    for name in table[engines[0]]:
        cells = []
        for e in engines:
            rate = table[e][name]
            if name.startswith("events"):
                cells += [f"{int(rate):,}", ""]
                continue
            base = table[e]["read"]
            cells += [f"{rate:,.0f}", "" if name == "read" else f"{(1 / rate - 1 / base) * 1e6:+.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
