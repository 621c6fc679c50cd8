"""Migration 0002 back-fills the compartment reference of token rows written before it existed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from housecall.core import migrate
from housecall.core.db import DatabaseURL
from tests.support import drop_database, new_database


@contextmanager
def database_at(engine: str, tmp_path: Path, revision: str) -> Iterator[str]:
    """A new database migrated up to ``revision`` only, dropped afterwards."""
    url = new_database(engine, tmp_path)
    command.downgrade(migrate.alembic_config(url), revision)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def url_at_0001(engine: str, tmp_path: Path) -> Iterator[str]:
    with database_at(engine, tmp_path, "0001") as url:
        yield url


def test_0002_backfills_pat(url_at_0001: str) -> None:
    engine = sa.create_engine(DatabaseURL.parse(url_at_0001).sqlalchemy_url)
    with engine.begin() as conn:
        # An Observation about Patient p1 (two token rows) and one with no patient (one token row).
        for res_id, param, code in (("o1", "code", "c1"), ("o1", "status", "final"), ("o2", "code", "c2")):
            conn.execute(
                sa.text(
                    "INSERT INTO sp_token (res_type, res_id, param, system, code) VALUES ('Observation', :i, :p, NULL, :c)"
                ),
                {"i": res_id, "p": param, "c": code},
            )
        conn.execute(
            sa.text(
                "INSERT INTO sp_reference (res_type, res_id, param, target_type, target_id) "
                "VALUES ('Observation', 'o1', 'subject', 'Patient', 'p1')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO compartment (patient_id, res_type, res_id) VALUES ('p1', 'Observation', 'o1')"
            )
        )
    migrate.upgrade(url_at_0001)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT res_id, param, code, pat FROM sp_token ORDER BY res_id, param")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("o1", "code", "c1", "subject|p1"),
        ("o1", "status", "final", "subject|p1"),
        ("o2", "code", "c2", None),
    ]


@pytest.fixture
def url_at_0004(engine: str, tmp_path: Path) -> Iterator[str]:
    with database_at(engine, tmp_path, "0004") as url:
        yield url


def test_0005_keeps_only_earlier_versions_in_history(url_at_0004: str) -> None:
    engine = sa.create_engine(DatabaseURL.parse(url_at_0004).sqlalchemy_url)
    insert = (
        "INSERT INTO {table} (res_type, res_id, version, last_updated, deleted, {extra}content) "
        "VALUES ('Patient', 'p1', :v, :t, false, {extra_value}:c)"
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(insert.format(table="resource", extra="", extra_value="")), {"v": 2, "t": 2, "c": b"v2"}
        )
        for v in (1, 2):
            conn.execute(
                sa.text(insert.format(table="resource_history", extra="method, ", extra_value="'PUT', ")),
                {"v": v, "t": v, "c": f"v{v}".encode()},
            )
    migrate.upgrade(url_at_0004)
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT version FROM resource_history ORDER BY version")).scalars().all()
    assert kept == [1]
    command.downgrade(migrate.alembic_config(url_at_0004), "0004")
    with engine.connect() as conn:
        back = conn.execute(sa.text("SELECT version FROM resource_history ORDER BY version")).scalars().all()
    engine.dispose()
    assert back == [1, 2]


@pytest.fixture
def url_at_0017(engine: str, tmp_path: Path) -> Iterator[str]:
    with database_at(engine, tmp_path, "owner_hash_indexes") as url:
        yield url


def test_0018_drops_the_rows_of_restricted_reference_parameters_and_derives_them_back(
    url_at_0017: str,
) -> None:
    engine = sa.create_engine(DatabaseURL.parse(url_at_0017).sqlalchemy_url)
    rows = [
        ("Observation", "o1", "subject", "Patient", "p1"),
        ("Observation", "o1", "patient", "Patient", "p1"),  # the copy the indexer used to write
        ("Observation", "o2", "subject", "Group", "g1"),
        ("AllergyIntolerance", "a1", "patient", "Patient", "p1"),  # an element of its own: kept
    ]
    with engine.begin() as conn:
        for row in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO sp_reference (res_type, res_id, param, target_type, target_id) "
                    "VALUES (:t, :i, :p, :tt, :ti)"
                ),
                dict(zip(("t", "i", "p", "tt", "ti"), row, strict=True)),
            )

    def stored() -> list[tuple[str, ...]]:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT res_type, res_id, param, target_type, target_id FROM sp_reference")
            ).all()
        return sorted(tuple(r) for r in found)

    migrate.upgrade(url_at_0017)
    assert stored() == sorted(r for r in rows if r[2] != "patient" or r[0] != "Observation")
    command.downgrade(migrate.alembic_config(url_at_0017), "owner_hash_indexes")
    assert stored() == sorted(rows)
    engine.dispose()


@pytest.fixture
def url_at_0018(engine: str, tmp_path: Path) -> Iterator[str]:
    with database_at(engine, tmp_path, "subset_alias_rows") as url:
        yield url


def test_0019_gives_token_rows_their_resources_latest_date(url_at_0018: str) -> None:
    engine = sa.create_engine(DatabaseURL.parse(url_at_0018).sqlalchemy_url)
    with engine.begin() as conn:
        for res_id, param, code in (("o1", "code", "c1"), ("o1", "status", "final"), ("o2", "code", "c1")):
            conn.execute(
                sa.text(
                    "INSERT INTO sp_token (res_type, res_id, param, system, code) VALUES ('Observation', :i, :p, 's', :c)"
                ),
                {"i": res_id, "p": param, "c": code},
            )
        # o1's date is a period (its latest instant counts); o2 has only another date parameter.
        for res_id, param, lo, hi in (
            ("o1", "date", 100, 500),
            ("o1", "date", 200, 300),
            ("o2", "issued", 7, 9),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO sp_date (res_type, res_id, param, lo, hi) VALUES ('Observation', :i, :p, :lo, :hi)"
                ),
                {"i": res_id, "p": param, "lo": lo, "hi": hi},
            )
    migrate.upgrade(url_at_0018)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT res_id, param, date_order FROM sp_token ORDER BY res_id, param")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("o1", "code", -500),
        ("o1", "status", -500),
        ("o2", "code", 2**63 - 1),
    ]
