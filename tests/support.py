"""Test support: fresh databases on both engines, an in-process client and a live server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from housecall.core import migrate
from housecall.core.db import Conn

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("HOUSECALL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ENGINES = ("sqlite", "postgresql")


def fixtures_dir() -> Path:
    """The shared test data; its absence is an error, never a skip."""
    path = Path(os.environ.get("HOUSECALL_FIXTURES") or REPO.parent / "shared" / "fixtures")
    if not (path / "synthea").is_dir():
        raise RuntimeError(f"test fixtures not found at {path} (set HOUSECALL_FIXTURES)")
    return path


def new_database(engine: str, workdir: Path) -> str:
    """A new, migrated database; the URL is returned (drop it with ``drop_database``)."""
    if engine == "sqlite":
        url = f"sqlite:///{workdir / f'hc-{uuid.uuid4().hex[:8]}.db'}"
    else:
        name = f"hc_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    migrate.upgrade(url)
    return url


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The organization `housecall import` creates on a database without any, so that the CLI tests and
# the API clients of the suite see the same data.
TEST_ORG = "default"
BACKEND_SCOPES = "system/*.cruds"


async def ensure_organization(conn: Conn, org_id: str, name: str | None = None) -> None:
    """The organization row ``org_id`` (no Organization resource), created when missing."""
    from housecall.fhir.store import now_us

    if not await conn.fetchval("SELECT 1 FROM organization WHERE id = $1", org_id):
        await conn.execute(
            "INSERT INTO organization (id, name, fhir_id, created) VALUES ($1, $2, NULL, $3)",
            org_id, name or f"Organization {org_id}", now_us(),
        )  # fmt: skip


async def provision_backend(
    url: str, org_id: str = TEST_ORG, scopes: str = BACKEND_SCOPES
) -> tuple[str, str]:
    """An organization (created when missing) and a backend client with a secret in it, the way an
    operator registers an integration: returns (client_id, secret)."""
    from housecall.core.db import open_database
    from housecall.fhir.store import now_us
    from housecall.smart.clients import create_client

    db = open_database(url)
    await db.connect()
    try:
        async with db.transaction() as conn:
            await ensure_organization(conn, org_id)
            client, secret = await create_client(
                conn, name="test suite", grant="client_credentials", scopes=scopes.split(), now_us=now_us(),
                secret=True, org_id=org_id,
            )  # fmt: skip
    finally:
        await db.close()
    assert secret is not None
    return client.client_id, secret


def token_request(client_id: str, secret: str, scopes: str = BACKEND_SCOPES) -> dict[str, object]:
    """The keyword arguments of a client_credentials token request (client_secret_basic)."""
    return {"data": {"grant_type": "client_credentials", "scope": scopes}, "auth": (client_id, secret)}


def backend_token(url: str, base: str, org_id: str = TEST_ORG, scopes: str = BACKEND_SCOPES) -> str:
    """A bearer token of a backend client, issued by a live server's token endpoint."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    # In a thread of its own: callers may be inside a running event loop (async tests).
    with ThreadPoolExecutor(1) as pool:
        client_id, secret = pool.submit(asyncio.run, provision_backend(url, org_id, scopes)).result()
    r = httpx.post(f"{base}/oauth/token", **token_request(client_id, secret, scopes), timeout=10)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


class LiveServer:
    """``housecall serve`` in a child process on 127.0.0.1, the way an operator runs it."""

    def __init__(
        self,
        database_url: str,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.database_url = database_url
        self.port = port or free_port()
        self.extra_env = extra_env or {}
        self.workers = workers
        self._token: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        env = {**os.environ, "HOUSECALL_DATABASE_URL": self.database_url, **self.extra_env}
        where = ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "housecall.cli", "serve", *where],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                )
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def auth_headers(self) -> dict[str, str]:
        """An Authorization header of a backend service (``system/*.cruds``) of the test
        organization, issued once by this server's token endpoint (tokens outlive restarts)."""
        if self._token is None:
            self._token = backend_token(self.database_url, self.base)
        return {"Authorization": f"Bearer {self._token}"}

    def serving_pid(self, client: socket.socket) -> int | None:
        """The process (the server's own, or one of its workers) that holds the server's end of
        the connected ``client`` socket, from ``/proc`` (Linux)."""
        assert self.proc is not None
        want = f"{self.port:04X}", f"{client.getsockname()[1]:04X}"
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
            if (local, remote) == want:
                inode = fields[9]
        if inode is None:
            return None
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            fds = Path(f"/proc/{pid}/fd")
            for fd in fds.iterdir() if fds.exists() else ():
                try:
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        return None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush - the crash case."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
