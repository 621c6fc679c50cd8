"""The store's PostgreSQL statements: array parameters reach the server exactly as given
(PostgreSQL only: SQLite takes rows, not arrays)."""

from __future__ import annotations

from typing import Any

import pytest

from housecall.core.db import open_database
from housecall.fhir.store import _array_param
from tests.support import PG_ADMIN_URL

# (type, values, sent as one text that the server splits)
CASES: list[tuple[str, list[Any], bool]] = [
    ("text", ["Observation", "Patient", "x"], True),
    ("text", ["a", None, "", None], True),
    ("text", [""], False),  # alone, an empty string would split to no element at all
    ("text", [None], True),
    ("text", ["with\x1funit separator", "plain"], False),  # separators inside values: a real array
    ("text", ["with\x1erecord separator", None], False),
    ("text", ["ünïcödé ✓", "tab\there", "line\nbreak", "quote'\"\\"], True),
    ("int8", [0, -1, 2**62, None, 1_700_000_000_000_000], True),
    ("int4", [1, 2, None], True),
    ("float8", [0.1, 1e-300, 1.7976931348623157e308, -2.5, None, 120.0], True),
    ("bytea", [b"{}", None], False),
]


@pytest.mark.parametrize(("pgtype", "values", "split"), CASES)
async def test_an_array_parameter_round_trips(pgtype: str, values: list[Any], split: bool) -> None:
    db = open_database(PG_ADMIN_URL)  # no table needed: the server evaluates the expression
    await db.connect()
    try:
        args: list[Any] = []
        expression = _array_param(args, values, pgtype)
        async with db.reader() as conn:
            got = await conn.fetchval(f"SELECT {expression}", *args)
    finally:
        await db.close()
    assert list(got) == values
    assert ("string_to_array" in expression) == split
