"""Portal and workspace pages under load: time to first byte with 50 simulated users.

For each engine (PostgreSQL, then SQLite): a fresh database with the demo organization
(`housecall demo --load-only`), a sign-in for every demo patient and for the demo clinician
(sessions created in the database, as a completed sign-in would: the bench measures pages, not
argon2), then `housecall serve` on 127.0.0.1 and 50 simulated users, each its own keep-alive
connection and cookie, opening the pages of their role in turn with a think time of 0.5 to 1.5 s (a
person reading), for DURATION seconds. 40 users are patients, 10 the clinician. Reports time to
first byte (response headers received) p50/p95/p99 per page and overall, pages per second, and the
largest body of each page.

    .venv/bin/python bench/pages_bench.py [--engine postgresql|sqlite] [--users 50] [--duration 60]

Targets 127.0.0.1 only; stops the server it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from housecall.core.db import open_database  # noqa: E402
from housecall.identity import service, sessions  # noqa: E402

PATIENT_PAGES = ["/portal", "/portal/messages", "/portal/results", "/portal/medications", "/portal/appointments",
                 "/portal/bills", "/portal/documents", "/portal/record", "/account"]  # fmt: skip
CLINICIAN_PAGES = ["/workspace", "/workspace/patients", "/workspace/schedule", "/account"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_database(engine: str, tmp: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp / 'pages.db'}"
    name = "hc_pages_" + secrets.token_hex(4)
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {name}"], check=True
    )
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                       check=False)  # fmt: skip


async def sessions_for(url: str) -> tuple[list[str], list[str]]:
    """Session cookies for every demo patient (accounts created here) and the demo clinician."""
    db = open_database(url)
    await db.connect()
    patients, clinicians = [], []
    try:
        async with db.transaction() as conn:
            org_id = await conn.fetchval("SELECT id FROM organization ORDER BY id LIMIT 1")
            ids = [r[0] for r in await conn.fetch(
                "SELECT res_id FROM resource WHERE res_type = 'Patient' AND org_id = $1 AND NOT deleted", org_id)]  # fmt: skip
            for n, pid in enumerate(ids):
                email = f"bench-patient-{n}@pages.bench"
                account = await service.find_account_by_email(conn, email)
                if account is None:
                    account = await service.create_account(
                        conn, org_id, email, "patient", "bench pages passphrase", patient_id=pid
                    )
                patients.append(await sessions.start_session(conn, account, sessions.FULL))
            clinician = await service.find_account_by_email(conn, "clinician@demo.housecall.test")
            assert clinician is not None, "the demo clinician account is missing"
            clinicians.append(await sessions.start_session(conn, clinician, sessions.FULL))
    finally:
        await db.close()
    return patients, clinicians


async def user(base: str, cookie: str, pages: list[str], until: float, out: dict[str, list[float]],
               sizes: dict[str, int], errors: list[str]) -> None:  # fmt: skip
    rng = random.Random(cookie)
    jar = {sessions.SESSION_COOKIE: cookie}
    async with httpx.AsyncClient(base_url=base, cookies=jar, timeout=30) as client:
        await asyncio.sleep(rng.uniform(0, 1.5))  # users arrive spread out
        while time.monotonic() < until:
            page = rng.choice(pages)
            start = time.perf_counter()
            async with client.stream("GET", page) as r:
                ttfb = time.perf_counter() - start
                body = await r.aread()
            if r.status_code != 200:
                errors.append(f"{page} {r.status_code}")
            else:
                out[page].append(ttfb)
                sizes[page] = max(sizes.get(page, 0), len(body))
            await asyncio.sleep(rng.uniform(0.5, 1.5))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def load(base: str, patients: list[str], clinicians: list[str], users: int, duration: float) -> None:
    out: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, int] = {}
    errors: list[str] = []
    until = time.monotonic() + duration
    n_clin = max(1, users // 5)
    tasks = [
        user(base, clinicians[i % len(clinicians)], CLINICIAN_PAGES, until, out, sizes, errors)
        for i in range(n_clin)
    ]
    tasks += [
        user(base, patients[i % len(patients)], PATIENT_PAGES, until, out, sizes, errors)
        for i in range(users - n_clin)
    ]
    began = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    every = [v for vs in out.values() for v in vs]
    print(f"{users} users, {elapsed:.0f} s: {len(every)} pages, {len(every) / elapsed:.1f} pages/s, "
          f"{len(errors)} errors {sorted(set(errors))[:8]}")  # fmt: skip
    print(f"{'page':28} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'bytes':>8}")
    for page in sorted(out):
        vs = out[page]
        print(
            f"{page:28} {len(vs):5d} {statistics.median(vs) * 1000:8.1f} {pct(vs, 0.95):8.1f} {pct(vs, 0.99):8.1f} {sizes[page]:8d}"
        )
    if every:
        print(f"{'all pages':28} {len(every):5d} {statistics.median(every) * 1000:8.1f} {pct(every, 0.95):8.1f} "
              f"{pct(every, 0.99):8.1f} {max(sizes.values()):8d}")  # fmt: skip


def run(engine: str, users: int, duration: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = new_database(engine, Path(tmp))
        env = {**os.environ, "HOUSECALL_DATABASE_URL": url, "HOUSECALL_SMTP_PORT": "1"}
        server = None
        try:
            subprocess.run([sys.executable, "-m", "housecall.cli", "demo", "--load-only"], env=env, check=True,
                           capture_output=True, timeout=600)  # fmt: skip
            patients, clinicians = asyncio.run(sessions_for(url))
            port = free_port()
            server = subprocess.Popen([sys.executable, "-m", "housecall.cli", "serve", "--port", str(port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            load_avg = os.getloadavg()[0]
            print(f"\n== {engine}: {len(patients)} patient sign-ins, load average {load_avg:.1f}")
            asyncio.run(load(base, patients, clinicians, users, duration))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=["postgresql", "sqlite"], action="append")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60)
    args = parser.parse_args()
    for engine in args.engine or ["postgresql", "sqlite"]:
        run(engine, args.users, args.duration)


if __name__ == "__main__":
    main()
