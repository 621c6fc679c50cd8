"""Logs keep paths, frames and exception types, never query strings or exception messages."""

from __future__ import annotations

import io
import logging

import pytest

from housecall.audit import logsafe
from tests.conftest import _client

CANARY = "Jqkv-Canary-Birthdate-1961-04-09"
SURNAME = "Smythe-Qzx"  # a value only, never in source lines a traceback shows


def test_access_log_lines_lose_their_query() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", f"/fhir/Patient?name={CANARY}", "1.1", 200), None,
    )  # fmt: skip
    assert logsafe.DropQueryStrings().filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "GET /fhir/Patient HTTP/1.1" 200'


def _raise_chain() -> None:
    try:
        raise KeyError(CANARY)
    except KeyError as exc:
        raise RuntimeError(f"Failing row contains ({CANARY}, {SURNAME})") from exc


def test_tracebacks_keep_frames_and_types_but_not_messages() -> None:
    with pytest.raises(RuntimeError) as caught:
        _raise_chain()
    text = logsafe.safe_traceback(caught.value)
    assert CANARY not in text and SURNAME not in text
    assert "KeyError: <message withheld" in text and "RuntimeError: <message withheld" in text
    assert (
        "direct cause" in text
        and "_raise_chain" in text
        and text.index("KeyError") < text.index("RuntimeError")
    )


async def test_an_unexpected_error_is_logged_without_its_message(database_url: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        async for client in _client(database_url):  # builds the app: logsafe.install() runs
            transport = client._transport  # type: ignore[attr-defined]
            transport.raise_app_exceptions = False

            async def boom() -> None:
                _raise_chain()

            transport.app.add_api_route("/boom", boom)
            r = await client.get("/boom", params={"q": CANARY})
            assert r.status_code == 500
    finally:
        root.removeHandler(handler)
    logged = stream.getvalue()
    assert "unhandled error on GET /boom" in logged  # the path, and the traceback, were logged
    assert "RuntimeError: <message withheld" in logged
    assert CANARY not in logged and SURNAME not in logged


def test_install_is_idempotent() -> None:
    logsafe.install()
    logsafe.install()
    access = logging.getLogger(logsafe.ACCESS_LOGGER)
    assert sum(isinstance(f, logsafe.DropQueryStrings) for f in access.filters) == 1
