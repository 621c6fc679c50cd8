#!/usr/bin/env python3
"""FHIR reads over HTTP with the audit trail as it runs (a successful read does not wait for its
event's commit), with every request waiting for it, and switched off - three ``housecall serve``
runs on the same database, interleaved in rounds.

Each server is the real one (``housecall serve`` on 127.0.0.1, uvloop, httptools) started through
a two-line launcher that, for the comparison runs only, replaces ``AuditSink.record``: "every event
waited for" records with ``wait=True``, "off" records nothing. 8 keep-alive clients (threads, as
``../shared/bench/fhir_load.py`` does) read Observations by id with a backend token.

    .venv/bin/python bench/bench_audit_http.py [--engine postgresql] [--reads 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_audit import drop, new_url  # noqa: E402
from tests.support import backend_token, free_port  # noqa: E402

CLIENTS = 8
PATCHES = {
    "audited (successful reads not waited for)": "",
    "audited, every event waited for": (
        "from housecall.audit import trail\n"
        "_record = trail.AuditSink.record\n"
        "async def record(self, entries, *, wait=None):\n"
        "    await _record(self, entries, wait=True)\n"
        "trail.AuditSink.record = record\n"
    ),
    "audit off": (
        "from housecall.audit import trail\n"
        "async def record(self, entries, *, wait=None):\n"
        "    return None\n"
        "trail.AuditSink.record = record\n"
    ),
}


def start(url: str, patch: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    code = (
        patch + f"from housecall.cli import app\napp(['serve', '--host', '127.0.0.1', '--port', '{port}'])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "HOUSECALL_DATABASE_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def load(port: int, token: str, ids: list[str], per_client: int) -> float:
    errors: list[int] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        for i in range(per_client):
            conn.request("GET", f"/fhir/Observation/{ids[(k * 31 + i) % len(ids)]}", headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors.append(r.status)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    start_time = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = CLIENTS * per_client / (time.perf_counter() - start_time)
    assert not errors, errors[:5]
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="postgresql")
    parser.add_argument("--reads", type=int, default=300, help="reads per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_avg = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        url = new_url(args.engine, Path(tmp))
        try:
            proc, port = start(url, "")  # migrates the empty database, then seeds it
            try:
                token = backend_token(url, f"http://127.0.0.1:{port}")
                headers = {"Authorization": f"Bearer {token}"}
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http_client:
                    patient = http_client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
                    ids = [
                        http_client.post("/fhir/Observation", content=json.dumps({
                            "resourceType": "Observation", "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                            "subject": {"reference": f"Patient/{patient}"}, "valueQuantity": {"value": i},
                        }), headers={"Content-Type": "application/fhir+json"}).json()["id"]
                        for i in range(50)
                    ]  # fmt: skip
            finally:
                proc.terminate()
                proc.wait()
            runs: dict[str, list[float]] = {name: [] for name in PATCHES}
            for _ in range(args.rounds):
                for name, patch in PATCHES.items():
                    proc, port = start(url, patch)
                    try:
                        load(port, token, ids, args.reads // 5)  # warm-up
                        runs[name].append(load(port, token, ids, args.reads))
                    finally:
                        proc.terminate()
                        proc.wait()
        finally:
            drop(url)
    print(f"\n{args.engine}, {CLIENTS} clients over HTTP, {args.reads} reads each, median of {args.rounds} "
          f"interleaved rounds, load average at start {load_avg:.2f}\n")  # fmt: skip
    print("| server | FHIR reads/s | rounds |\n|---|---|---|")
    for name, rates in runs.items():
        print(f"| {name} | {statistics.median(rates):,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} |")


if __name__ == "__main__":
    main()
