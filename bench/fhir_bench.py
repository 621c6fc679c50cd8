#!/usr/bin/env python3
"""Housecall against the reference FHIR workload, with raw-driver baselines in the same run.

For each engine (PostgreSQL, then SQLite) this script:
1. creates a fresh database, starts ``housecall serve`` on 127.0.0.1 and runs the reference
   workload ``../shared/bench/fhir_load.py`` against it (server CPU per item from SERVER_PID);
2. times the same Observation rows written straight through the driver (one row + history row
   per transaction, one client and 8 clients; then bulk) - the physical limit of the machine;
3. times ``housecall import`` of the 30 Synthea bundles (full validation and indexing).

``--workers 1,2`` runs the workload on PostgreSQL once per number of serving processes
(``housecall serve --workers N``, the production shape: one process per core). With more than one
the server CPU per item is not reported: the reference workload reads one process's.
Everything targets 127.0.0.1 only and every loop is bounded. Results go to
``bench/results/fhir_bench-<time>.json`` and a markdown table on stdout.

    .venv/bin/python bench/fhir_bench.py [--engines postgresql,sqlite] [--workers 1,2] [--skip-import]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LOAD = SHARED / "bench" / "fhir_load.py"
PG_ADMIN = os.environ.get("HOUSECALL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
sys.path.insert(0, str(ROOT))
from tests.support import LiveServer, free_port  # noqa: E402

N_ROWS = 2000


def obs(i: int) -> bytes:
    return orjson.dumps({
        "resourceType": "Observation", "id": str(uuid.uuid4()), "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "subject": {"reference": f"Patient/p{i % 10}"},
        "effectiveDateTime": "2024-05-01T09:00:00+00:00",
        "valueQuantity": {"value": 50 + i % 100, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
    })  # fmt: skip


def new_db(engine: str, tmp: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    name = f"hc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_db(url: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def run_workload(url: str, workers: int = 1) -> list[dict[str, object]]:
    server = LiveServer(url, port=free_port(), workers=workers).start()
    try:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        # As a backend service of the organization (system/*.cruds): every request pays the token
        # lookup, the access decision and its audit event, as in production.
        token = server.auth_headers()["Authorization"].removeprefix("Bearer ")
        env = {
            **os.environ,
            "FHIR_PORT": str(server.port),
            "FHIR_TOKEN": token,
            "OUT": str(out),
        }
        if workers == 1:
            env["SERVER_PID"] = str(server.proc.pid)  # type: ignore[union-attr]
        subprocess.run([sys.executable, str(LOAD)], env=env, check=True, capture_output=True, timeout=1800)
        return json.loads(out.read_text())  # type: ignore[no-any-return]
    finally:
        server.stop()


_DDL = (
    "CREATE TABLE raw_res (id text PRIMARY KEY, content bytea NOT NULL)",
    "CREATE TABLE raw_hist (id text, version int, content bytea NOT NULL, PRIMARY KEY (id, version))",
)


async def pg_raw(url: str) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    for ddl in _DDL:
        await conn.execute(ddl)
    rows = [obs(i) for i in range(N_ROWS * 3)]
    ins = "WITH a AS (INSERT INTO raw_res VALUES ($1, $2)) INSERT INTO raw_hist VALUES ($1, 1, $2)"
    t0 = time.perf_counter()
    for i in range(N_ROWS):
        await conn.execute(ins, f"a{i}", rows[i])
    single = N_ROWS / (time.perf_counter() - t0)
    pool = await asyncpg.create_pool(url, min_size=8, max_size=8)
    it = iter(range(N_ROWS, 2 * N_ROWS))

    async def worker() -> None:
        async with pool.acquire() as c:
            for i in it:
                await c.execute(ins, f"b{i}", rows[i])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(8)))
    conc = N_ROWS / (time.perf_counter() - t0)
    await pool.close()
    t0 = time.perf_counter()
    await conn.copy_records_to_table(
        "raw_res", records=[(f"c{i}", rows[i]) for i in range(2 * N_ROWS, 3 * N_ROWS)]
    )
    bulk = N_ROWS / (time.perf_counter() - t0)
    await conn.close()
    return {
        "raw_single_tx_per_s": round(single, 1),
        "raw_single_tx_c8_per_s": round(conc, 1),
        "raw_bulk_rows_per_s": round(bulk, 1),
    }


def sqlite_raw(url: str) -> dict[str, float]:
    path = url.split("sqlite:///", 1)[1]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for ddl in _DDL:
        conn.execute(ddl.replace("bytea", "blob"))
    rows = [obs(i) for i in range(N_ROWS * 2)]
    t0 = time.perf_counter()
    for i in range(N_ROWS):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO raw_res VALUES (?, ?)", (f"a{i}", rows[i]))
        conn.execute("INSERT INTO raw_hist VALUES (?, 1, ?)", (f"a{i}", rows[i]))
        conn.execute("COMMIT")
    single = N_ROWS / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO raw_res VALUES (?, ?)", [(f"c{i}", rows[i]) for i in range(N_ROWS, 2 * N_ROWS)]
    )
    conn.execute("COMMIT")
    bulk = N_ROWS / (time.perf_counter() - t0)
    conn.close()
    return {"raw_single_tx_per_s": round(single, 1), "raw_bulk_rows_per_s": round(bulk, 1)}


def import_rate(url: str) -> dict[str, float]:
    files = sorted((SHARED / "fixtures" / "synthea").glob("*.json"))
    entries = sum(len(json.loads(f.read_bytes())["entry"]) for f in files)
    env = {**os.environ, "HOUSECALL_DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "housecall.cli", "migrate"], env=env, check=True, capture_output=True
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "housecall.cli", "import", *map(str, files)], env=env, check=True,
                   capture_output=True)  # fmt: skip
    wall = time.perf_counter() - t0
    return {
        "import_entries": entries,
        "import_wall_s": round(wall, 2),
        "import_resources_per_s": round(entries / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="postgresql,sqlite")
    ap.add_argument("--workers", default="1", help="serving processes on PostgreSQL, e.g. 1,2")
    ap.add_argument("--skip-import", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for engine in args.engines.split(","):
            res: dict[str, object] = {}
            counts = [int(n) for n in args.workers.split(",")] if engine == "postgresql" else [1]
            for n, workers in enumerate(counts):
                # The first count's column also holds the engine's raw-driver and import figures.
                name = engine if workers == 1 else f"{engine}, {workers} processes"
                column = results[name] = res if n == 0 else {}
                url = new_db(engine, tmp)
                try:
                    column["workload"] = run_workload(url, workers)
                finally:
                    drop_db(url)
            url = new_db(engine, tmp)
            try:
                res["raw"] = asyncio.run(pg_raw(url)) if engine == "postgresql" else sqlite_raw(url)
            finally:
                drop_db(url)
            if not args.skip_import:
                url = new_db(engine, tmp)
                try:
                    res["import"] = import_rate(url)
                finally:
                    drop_db(url)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"fhir_bench-{stamp}.json").write_text(json.dumps(results, indent=1))
    print("| phase | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    phases = [p["phase"] for p in next(iter(results.values()))["workload"]]  # type: ignore[index]
    for n, phase in enumerate(phases):
        cells = []
        for name, res in results.items():
            p = res["workload"][n]  # type: ignore[index]
            cpu = p.get("cpu_ms_per_item_server") if "processes" not in name else None
            cells.append(f"{p['items_per_s']}/s · p50 {p['p50_ms']} ms · srv CPU {cpu or '-'} ms")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    for key in ("raw", "import"):
        for metric in sorted({m for r in results.values() for m in r.get(key, {})}):  # type: ignore[union-attr]
            print(
                f"| {metric} | "
                + " | ".join(str(r.get(key, {}).get(metric, "-")) for r in results.values())
                + " |"
            )  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
