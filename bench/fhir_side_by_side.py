#!/usr/bin/env python3
"""Two source trees of Housecall side by side on the same FHIR requests, interleaved in rounds.

For judging one change: each tree gets its own ``housecall serve`` (its own database, migrated
by that tree) loaded with the same 10 Patients and 2,200 Observations; then, round after round
and in alternating order, each server answers the same phase for a few seconds (reads by id,
searches by subject+code, creates, or Bundles of 100 new Observations) with 1 and with 8
keep-alive clients sending a backend service's bearer token. It prints the median rate of each
and the ratio, so drift of the machine between rounds hits both alike. 127.0.0.1 only; bounded.

    git worktree add --detach /tmp/before HEAD~1
    .venv/bin/python bench/fhir_side_by_side.py --before /tmp/before/src --after src \\
        --phases read,search,create,transaction [--rounds 3] [--seconds 3] [--clients 1,8]

``--after-socket /var/run/postgresql`` compares connections instead of trees: the "after" server
reaches PostgreSQL over its Unix socket in that directory, the "before" one over 127.0.0.1 (give
the same tree to both). ``--after-workers 2`` compares numbers of serving processes the same way:
the "after" server runs ``housecall serve --workers 2``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support import PG_ADMIN_URL, LiveServer, free_port  # noqa: E402

LOINC = ["8480-6", "8462-4", "8867-4", "9279-1", "8310-5", "29463-7", "8302-2", "39156-5", "2708-6", "8287-5"]


@dataclass
class Server:
    name: str
    url: str
    live: LiveServer
    headers: dict[str, str] = field(default_factory=dict)
    patients: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)

    def request(self, conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"{self.name}: {method} {path} -> {answer.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.live.port, timeout=60)


def observation(server: Server, i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": LOINC[(i // 10) % 10]}]},
        "subject": {"reference": "Patient/" + server.patients[i % 10]},
        "effectiveDateTime": "2024-05-01T09:00:00+00:00",
        "valueQuantity": {"value": 50 + i % 100, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                          "code": "mm[Hg]"},
    }  # fmt: skip


def bundle(server: Server, kind: str) -> dict[str, Any]:
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation(server, j),
         "request": {"method": "POST", "url": "Observation"}}
        for j in range(100)
    ]  # fmt: skip
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def one(server: Server, conn: http.client.HTTPConnection, phase: str, i: int) -> None:
    if phase == "read":
        server.request(conn, "GET", "/fhir/Observation/" + server.reads[i % len(server.reads)])
    elif phase == "search":
        code = urllib.parse.quote("http://loinc.org|" + LOINC[(i // 10) % 10])
        server.request(
            conn, "GET", f"/fhir/Observation?subject=Patient/{server.patients[i % 10]}&code={code}"
        )
    elif phase == "create":
        server.request(conn, "POST", "/fhir/Observation", observation(server, i))
    elif phase in ("batch", "transaction"):
        server.request(conn, "POST", "/fhir", bundle(server, phase))
    else:
        raise SystemExit(f"unknown phase {phase}")


def start(name: str, src: str, socket_dir: str | None = None, workers: int = 1) -> Server:
    """``housecall serve --workers N`` of the tree at ``src`` on a fresh database, loaded; over the
    Unix socket in ``socket_dir`` when given, else over TCP as ``PG_ADMIN_URL`` names it."""
    database = f"hc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    parts = urllib.parse.urlsplit(url)
    served = url if socket_dir is None else f"postgresql://{parts.username}@/{database}?host={socket_dir}"
    # An empty database: the tree's own `housecall serve` migrates it with its own migrations.
    env = {"PYTHONPATH": str(Path(src).resolve())}
    live = LiveServer(served, port=free_port(), extra_env=env, workers=workers).start()
    server = Server(name, url, live)
    server.headers = {
        **live.auth_headers(),
        "Content-Type": "application/fhir+json",
        "Accept": "application/fhir+json",
    }
    conn = server.connect()
    for k in range(10):
        server.patients.append(server.request(conn, "POST", "/fhir/Patient", {"resourceType": "Patient", "name": [{"family": f"Side{k}"}]})["id"])  # fmt: skip
    server.reads = [
        server.request(conn, "POST", "/fhir/Observation", observation(server, i))["id"] for i in range(200)
    ]
    for _ in range(20):
        server.request(conn, "POST", "/fhir", bundle(server, "batch"))
    return server


def stop(server: Server) -> None:
    """Stop the server and drop its database."""
    server.live.stop()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{server.url.rsplit("/", 1)[1]}" WITH (FORCE)')


def run(server: Server, phase: str, clients: int, seconds: float) -> float:
    done = [0] * clients
    deadline = time.monotonic() + seconds

    def worker(n: int) -> None:
        conn = server.connect()
        i = n * 1_000_000
        while time.monotonic() < deadline:
            one(server, conn, phase, i)
            i += 1
            done[n] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_request = 100 if phase in ("batch", "transaction") else 1
    return sum(done) * per_request / (time.monotonic() - t0)


def tree_arguments(doc: str | None) -> argparse.ArgumentParser:
    """A command line that names the two source trees to compare (``--before``, ``--after``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the src directory of the tree to compare against")
    ap.add_argument("--after", default=str(ROOT / "src"), help="the src directory of the changed tree")
    return ap


def main() -> None:
    ap = tree_arguments(__doc__)
    ap.add_argument("--phases", default="read,search,create,transaction")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--after-socket", help="the after server connects over the Unix socket in this directory")
    ap.add_argument("--after-workers", type=int, default=1, help="serving processes of the after server")
    args = ap.parse_args()
    phases = args.phases.split(",")
    clients = [int(c) for c in args.clients.split(",")]
    servers = [
        start("before", args.before),
        start("after", args.after, args.after_socket, args.after_workers),
    ]
    rates: dict[tuple[str, int, str], list[float]] = {}
    try:
        load = [os.getloadavg()[0]]
        for r in range(args.rounds):
            for phase in phases:
                for c in clients:
                    for server in servers if r % 2 == 0 else servers[::-1]:
                        rates.setdefault((phase, c, server.name), []).append(
                            run(server, phase, c, args.seconds)
                        )
        load.append(os.getloadavg()[0])
        unit = "items/s (Bundle phases: resources/s)"
        print(
            f"median of {args.rounds} rounds of {args.seconds:g} s, {unit}; load average {load[0]:.1f}-{load[1]:.1f}"
        )
        print("| phase | clients | before | after | after/before |\n|---|---|---|---|---|")
        for phase in phases:
            for c in clients:
                before, after = (statistics.median(rates[(phase, c, s.name)]) for s in servers)
                print(f"| {phase} | {c} | {before:,.0f} | {after:,.0f} | {after / before:.2f} |")
    finally:
        for server in servers:
            stop(server)


if __name__ == "__main__":
    main()
