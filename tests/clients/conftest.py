"""A live ``housecall serve`` per engine for the real-client tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import LiveServer, drop_database, new_database


@pytest.fixture(scope="module")
def fhir_base(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The FHIR base URL of a live server on a database of its own (per module and engine)."""
    url = new_database(engine, tmp_path_factory.mktemp(f"client-{engine}"))
    live = LiveServer(url).start()
    try:
        yield f"{live.base}/fhir"
    finally:
        live.stop()
        drop_database(url)
