"""Run and check the Alembic migrations for the configured database (both engines).

Alembic and SQLAlchemy are imported by the functions that use them: importing them takes ~0.3 s,
which commands that only need ``holds_schema`` (``housecall import``) do not pay.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from housecall.core.db import Database, DatabaseURL

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", DatabaseURL.parse(database_url).sqlalchemy_url)
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def _prepare(database_url: str) -> None:
    url = DatabaseURL.parse(database_url)
    if url.dialect == "sqlite":
        Path(url.path).parent.mkdir(parents=True, exist_ok=True)


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    _prepare(database_url)
    command.upgrade(alembic_config(database_url), revision)
    url = DatabaseURL.parse(database_url)
    if url.dialect == "sqlite":
        # WAL is a property of the database file: set it when the file is made, so that even a
        # database only ever touched by the CLI is in the mode `housecall check` expects.
        conn = sqlite3.connect(url.path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()


def check(database_url: str) -> None:
    """Raise ``alembic.util.CommandError`` when the models and the migrations disagree."""
    from alembic import command

    command.check(alembic_config(database_url))


def pending(database_url: str) -> bool:
    """True when the database is behind the newest migration (`housecall migrate` brings it up)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    engine = create_engine(DatabaseURL.parse(database_url).sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision() != head
    finally:
        engine.dispose()


def is_empty(database_url: str) -> bool:
    """True when the database has no Housecall tables yet (``serve`` migrates it first then)."""
    from sqlalchemy import create_engine, inspect

    _prepare(database_url)
    engine = create_engine(DatabaseURL.parse(database_url).sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return "resource" not in inspect(conn).get_table_names()
    finally:
        engine.dispose()


async def holds_schema(db: Database) -> bool:
    """False when the database has no Housecall tables yet: ``is_empty`` on a connected Database,
    without SQLAlchemy."""
    async with db.reader() as conn:
        if conn.dialect == "sqlite":
            sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'resource'"
        else:
            sql = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'resource'"
        return bool(await conn.fetchval(sql))
