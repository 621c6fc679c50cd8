"""``housecall serve --workers 2`` on PostgreSQL: the processes share one store, take turns on
writes, honour a revocation made in the other process, and their audit events form one chain.

Each keep-alive connection is served by one worker; the test opens connections until it holds one
on each (``LiveServer.serving_pid``), so every check below crosses processes for real.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import LiveServer, drop_database, new_database, provision_backend, token_request


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[LiveServer]:
    url = new_database("postgresql", tmp_path)  # SQLite serves from one process
    server = LiveServer(url, workers=2).start()
    try:
        yield server
    finally:
        server.stop()
        drop_database(url)


class Client:
    """One keep-alive connection, and the worker that serves it."""

    def __init__(self, server: LiveServer, token: str) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.token = token
        self.call("GET", "/fhir/metadata")  # connects: the worker that accepted it serves it from now on
        assert self.http.sock is not None
        self.pid = server.serving_pid(self.http.sock)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/fhir+json",
            **(headers or {}),
        }
        self.http.request(method, path, body=json.dumps(body) if body is not None else None, headers=sent)
        answer = self.http.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else None


def one_per_worker(server: LiveServer, token: str) -> tuple[Client, Client]:
    """A connection served by each worker; the second may still be starting, so keep trying a while."""
    seen: dict[int, Client] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        client = Client(server, token)
        assert client.pid is not None
        seen.setdefault(client.pid, client)
        if len(seen) == 2:
            first, second = seen.values()
            return first, second
        time.sleep(0.05)
    raise AssertionError(f"for 30 s every connection went to {list(seen)}")


def test_two_workers_share_the_store_and_a_revocation(two_workers: LiveServer) -> None:
    server = two_workers
    client_id, secret = asyncio.run(provision_backend(server.database_url))
    issued = httpx.post(f"{server.base}/oauth/token", **token_request(client_id, secret), timeout=10)  # type: ignore[arg-type]
    token = issued.json()["access_token"]
    a, b = one_per_worker(server, token)
    assert a.pid != b.pid

    # A write in one process is read in the other, and version checks hold across them.
    status, patient = a.call(
        "POST", "/fhir/Patient", {"resourceType": "Patient", "name": [{"family": "Across"}]}
    )
    assert status == 201
    path = f"/fhir/Patient/{patient['id']}"
    status, read = b.call("GET", path)
    assert (status, read["name"]) == (200, [{"family": "Across"}])
    changed = {**read, "name": [{"family": "Changed"}]}
    assert b.call("PUT", path, changed, {"If-Match": 'W/"1"'})[0] == 200
    status, outcome = a.call("PUT", path, changed, {"If-Match": 'W/"1"'})
    assert status == 412 and outcome["resourceType"] == "OperationOutcome"
    status, searched = a.call("GET", "/fhir/Patient?family=changed")
    assert status == 200 and [e["resource"]["id"] for e in searched["entry"]] == [patient["id"]]

    # Both processes now remember the token; revoking it through one ends it in both.
    revoked = httpx.post(
        f"{server.base}/oauth/revoke", data={"token": token}, auth=(client_id, secret), timeout=10
    )
    assert revoked.status_code == 200
    for client in (a, b):
        deadline = time.monotonic() + 2  # the other process learns it by notification (decision 0027)
        while (status := client.call("GET", path)[0]) == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert status == 401, f"worker {client.pid} still accepts a revoked token"

    # Both processes recorded audit events; their sealers took turns on one chain.
    env = {**os.environ, "HOUSECALL_DATABASE_URL": server.database_url}
    verified = subprocess.run(
        [sys.executable, "-m", "housecall.cli", "audit", "verify", "--seal"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "audit events verify" in verified.stdout
