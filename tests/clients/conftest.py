"""A live ``housecall serve`` per engine for the real-client tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import LiveServer, backend_token, drop_database, new_database


@pytest.fixture(scope="module")
def live_fhir(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(FHIR base URL, bearer token) of a live server on a database of its own (per module and
    engine); the token is a backend service's, issued by the server's token endpoint."""
    url = new_database(engine, tmp_path_factory.mktemp(f"client-{engine}"))
    live = LiveServer(url).start()
    try:
        yield f"{live.base}/fhir", backend_token(url, live.base)
    finally:
        live.stop()
        drop_database(url)


@pytest.fixture(scope="module")
def fhir_base(live_fhir: tuple[str, str]) -> str:
    return live_fhir[0]


@pytest.fixture(scope="module")
def fhir_token(live_fhir: tuple[str, str]) -> str:
    return live_fhir[1]
