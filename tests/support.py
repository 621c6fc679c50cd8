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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``housecall serve`` in a child process on 127.0.0.1, the way an operator runs it."""

    def __init__(
        self, database_url: str, port: int | None = None, extra_env: dict[str, str] | None = None
    ) -> None:
        self.database_url = database_url
        self.port = port or free_port()
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        env = {**os.environ, "HOUSECALL_DATABASE_URL": self.database_url, **self.extra_env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "housecall.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
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
