"""Shared fixtures. Every test that touches data runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from housecall.app import create_app
from housecall.audit import trail
from housecall.core.db import Database, open_database
from housecall.core.settings import Settings
from housecall.smart import tokens
from tests.support import (
    ENGINES,
    TEST_ORG,
    drop_database,
    fixtures_dir,
    new_database,
    provision_backend,
    token_request,
)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return fixtures_dir()


@pytest.fixture(scope="session", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per engine, shared by the tests that need no clean slate."""
    url = new_database(engine, tmp_path_factory.mktemp(engine))
    yield url
    drop_database(url)


@pytest.fixture
def fresh_database_url(engine: str, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own, for tests that count what is stored."""
    url = new_database(engine, tmp_path)
    yield url
    drop_database(url)


async def _client(url: str, org_id: str = TEST_ORG, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the app, signed in as a backend service of organization ``org_id``
    (``system/*.cruds``, through the real token endpoint)."""
    app = create_app(Settings(database_url=url, **settings))  # type: ignore[arg-type]
    db: Database = open_database(url)
    await db.connect()
    app.state.db = db
    app.state.live_tokens = await tokens.watch_tokens(db)  # as the server runs (PostgreSQL)
    client_id, secret = await provision_backend(url, org_id)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await client.post("/oauth/token", **token_request(client_id, secret))  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client
    await tokens.unwatch_tokens(app.state.live_tokens)
    await trail.sink_for(app.state).close()  # the last reads' events, as the server's shutdown does
    await db.close()


@pytest.fixture(scope="session")
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTP client on the shared database of the engine."""
    async for c in _client(database_url):
        yield c


@pytest.fixture
async def fresh_client(fresh_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(fresh_database_url):
        yield c
