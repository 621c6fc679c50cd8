"""The schema comes from the migrations on both engines, without drift; settings load as documented."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from housecall.core import migrate
from housecall.core.db import DatabaseURL
from housecall.core.settings import Settings


def test_migrations_match_the_models(database_url: str) -> None:
    # `alembic check` raises when autogenerate would emit operations: the models and the
    # migrations agree on this engine.
    migrate.check(database_url)


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    import asyncio

    from housecall.core.db import open_database

    url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate.upgrade(url)

    async def pragmas() -> tuple[str, int]:
        db = open_database(url)
        await db.connect()
        try:
            async with db.reader() as conn:
                return await conn.fetchval("PRAGMA journal_mode"), await conn.fetchval("PRAGMA synchronous")
        finally:
            await db.close()

    mode, sync = asyncio.run(pragmas())
    assert (mode, sync) == ("wal", 2)  # 2 = FULL
    assert sqlite3.connect(tmp_path / "x.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_schema_uses_byte_collation_for_prefix_search(engine: str, database_url: str) -> None:
    if engine != "postgresql":
        pytest.skip(
            "collation is a PostgreSQL property"
        )  # the SQLite half of the same check is BINARY by default
    with psycopg.connect(DatabaseURL.parse(database_url).path) as conn:
        row = conn.execute(
            "SELECT collation_name FROM information_schema.columns WHERE table_name='sp_string' AND column_name='norm'"
        ).fetchone()
    assert row is not None and row[0] == "C"


def test_postgres_compresses_large_json_with_lz4(engine: str, database_url: str) -> None:
    if engine != "postgresql":
        pytest.skip("column compression is a PostgreSQL property")
    with psycopg.connect(DatabaseURL.parse(database_url).path) as conn:
        if conn.execute("SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' "
                        "AND 'lz4' = ANY(enumvals)").fetchone() == (0,):  # fmt: skip
            pytest.skip("this PostgreSQL server was built without LZ4")
        methods = conn.execute(
            "SELECT attrelid::regclass::text, attname, attcompression FROM pg_attribute "
            "WHERE (attrelid::regclass::text, attname) IN "
            "(('audit_log', 'event'), ('resource', 'content'), ('resource_history', 'content'))"
        ).fetchall()
        conn.execute("INSERT INTO audit_log (org_id, recorded, agent, event) VALUES ('lz4', 0, 'test', %s)",
                     (b'{"entity": []}' * 1000,))  # fmt: skip
        stored = conn.execute(
            "SELECT pg_column_compression(event) FROM audit_log WHERE org_id = 'lz4'"
        ).fetchone()
        conn.rollback()
    assert sorted(methods) == [("audit_log", "event", "l"), ("resource", "content", "l"),
                               ("resource_history", "content", "l")]  # fmt: skip
    assert stored == ("lz4",)


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("sqlite:///var/x.db", "sqlite"),
        ("sqlite:////abs/x.db", "sqlite"),
        ("postgresql://u@h:5432/db", "postgresql"),
        ("postgresql+asyncpg://u@h/db", "postgresql"),
    ],
)
def test_database_urls(url: str, dialect: str) -> None:
    assert DatabaseURL.parse(url).dialect == dialect


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://", "nonsense"])
def test_bad_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by the CLI test
        DatabaseURL.parse(url)


def test_environment_overrides_settings_file(tmp_path: Path) -> None:
    settings_file = tmp_path / "housecall.env"
    settings_file.write_text("HOUSECALL_DATABASE_URL=sqlite:///from-file.db\nHOUSECALL_MAX_COUNT=50\n")
    code = "from housecall.core.settings import Settings; s = Settings(); print(s.database_url, s.max_count)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOUSECALL_")}
    env["HOUSECALL_SETTINGS_FILE"] = str(settings_file)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["sqlite:///from-file.db", "50"]
    env["HOUSECALL_MAX_COUNT"] = "70"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["sqlite:///from-file.db", "70"]


def test_defaults() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.database_url.startswith("sqlite:///") and s.max_count == 1000
