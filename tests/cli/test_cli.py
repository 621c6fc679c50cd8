"""The ``housecall`` command, run as an operator runs it (a subprocess with HOUSECALL_DATABASE_URL),
on both engines: migrate, check, import/export, backup/restore and the demo loader."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from housecall.cli import DEMO_ORG
from housecall.core import migrate as migrations
from housecall.core.db import STORE_TABLES
from tests.conftest import _client
from tests.support import PG_ADMIN_URL, TEST_ORG, drop_database


def hc(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HOUSECALL_DATABASE_URL": database_url, "COLUMNS": "250", **env}
    full_env.pop("HOUSECALL_SETTINGS_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "housecall.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def empty_database_url(engine: str, tmp_path: Path) -> Iterator[str]:
    """A database that exists but was never migrated."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"hc_test_empty_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    drop_database(url)


async def type_counts(url: str, org_id: str = TEST_ORG) -> dict[str, int]:
    """Live resources per type and the number of stored versions of an organization, through the API."""
    counts: dict[str, int] = {}
    async for client in _client(url, org_id):
        r = await client.get("/fhir/_history?_count=1000")
        history = r.json()
        types = {e["request"]["url"].split("/")[0] for e in history.get("entry", [])}
        assert history["total"] <= 1000, "the test data should stay small"
        for t in sorted(types):
            total = (await client.get(f"/fhir/{t}?_summary=count")).json()["total"]
            if total:
                counts[t] = total
        counts["versions"] = history["total"]
    return counts


def bulk_files(fixtures: Path) -> list[str]:
    folder = fixtures / "synthea-bulk-ndjson-10-partial"
    return [str(p) for p in sorted(folder.glob("*.ndjson")) if p.name != "log.ndjson"]


def small_bundle(fixtures: Path) -> str:
    return str(next((fixtures / "synthea").glob("Luigi_Wiegand_*.json")))


def entries_in(bundle: str) -> int:
    return len(json.loads(Path(bundle).read_bytes())["entry"])


# -- migrate and check ------------------------------------------------------------------------------


def test_migrate_then_check(empty_database_url: str) -> None:
    url = empty_database_url
    assert migrations.is_empty(url)
    r = hc(url, "check")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not migrated" in flat(r.stderr)

    r = hc(url, "migrate")
    assert r.returncode == 0, r.stderr
    assert "migrated" in r.stdout
    assert not migrations.is_empty(url)
    r = hc(url, "migrate")  # again: nothing to do, still fine
    assert r.returncode == 0, r.stderr

    r = hc(url, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sound" in flat(r.stdout)


async def test_import_into_a_new_database_migrates_it_first(empty_database_url: str, fixtures: Path) -> None:
    url = empty_database_url
    assert migrations.is_empty(url)
    r = hc(url, "import", small_bundle(fixtures))
    assert r.returncode == 0, r.stderr
    entries = entries_in(small_bundle(fixtures))
    assert f"1 files, {entries} entries: {entries} created" in flat(r.stdout)
    assert not migrations.pending(url)
    counts = await type_counts(url)
    assert counts["versions"] == entries


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_import_gathers_statistics_once_at_the_end(fresh_database_url: str, fixtures: Path) -> None:
    """An import vacuums and analyzes the store's tables when it is done, not as they double."""
    files = sorted((fixtures / "synthea").glob("*.json"), key=lambda p: p.stat().st_size)[-2:]
    assert sum(entries_in(str(p)) for p in files) > 2000  # past three doublings from 500
    r = hc(fresh_database_url, "import", *map(str, files))
    assert r.returncode == 0, r.stderr
    with psycopg.connect(fresh_database_url) as pg:
        rows = pg.execute(
            "SELECT relname, vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (list(STORE_TABLES),),
        ).fetchall()
    assert sorted(rows) == sorted((table, 1, 1) for table in STORE_TABLES)


def test_check_passes_on_a_migrated_database(fresh_database_url: str) -> None:
    r = hc(fresh_database_url, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sound" in flat(r.stdout)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_check_fails_on_an_unmigrated_sqlite_file(empty_database_url: str) -> None:
    path = Path(empty_database_url.removeprefix("sqlite:///"))
    sqlite3.connect(path).close()  # the file exists, with no tables
    assert path.exists()
    r = hc(empty_database_url, "check")
    assert r.returncode == 1
    assert "not migrated" in flat(r.stderr)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_check_reports_unsafe_sqlite_journal_mode(fresh_database_url: str) -> None:
    path = Path(fresh_database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    r = hc(fresh_database_url, "check")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "journal_mode is delete" in flat(r.stderr)

    r = hc(fresh_database_url, "check", HOUSECALL_ALLOW_UNSAFE_DURABILITY="true")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unsafe durability allowed" in flat(r.stderr)


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_check_reports_postgres_synchronous_commit_off(fresh_database_url: str) -> None:
    name = fresh_database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')  # this database only
    r = hc(fresh_database_url, "check")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "synchronous_commit is off" in flat(r.stderr)


# -- export -------------------------------------------------------------------------------------------


async def test_export_writes_ndjson_per_type(fresh_database_url: str, fixtures: Path, tmp_path: Path) -> None:
    url = fresh_database_url
    r = hc(url, "import", *bulk_files(fixtures), small_bundle(fixtures))
    assert r.returncode == 0, r.stderr
    async for client in _client(url):
        gone = (await client.get("/fhir/Patient?_count=1")).json()["entry"][0]["resource"]["id"]
        assert (await client.delete(f"/fhir/Patient/{gone}")).status_code == 204
    counts = await type_counts(url)
    counts.pop("versions")

    out = tmp_path / "export"
    r = hc(url, "export", "--out", str(out))
    assert r.returncode == 0, r.stderr
    files = {p.stem: p for p in out.glob("*.ndjson")}
    assert set(files) == set(counts)
    exported_ids: dict[str, set[str]] = {}
    for res_type, path in files.items():
        lines = [json.loads(line) for line in path.read_bytes().splitlines()]
        assert len(lines) == counts[res_type], res_type
        assert {x["resourceType"] for x in lines} == {res_type}
        exported_ids[res_type] = {x["id"] for x in lines}
        assert len(exported_ids[res_type]) == len(lines)
        assert f"{res_type}: {counts[res_type]}" in r.stdout
    assert gone not in exported_ids["Patient"]

    async for client in _client(url):
        for res_type, ids in exported_ids.items():
            r = await client.get(f"/fhir/{res_type}?_count=1000&_elements=id")
            assert {e["resource"]["id"] for e in r.json()["entry"]} == ids
        # Content is exactly what a read returns.
        first = json.loads(files["Patient"].read_bytes().splitlines()[0])
        assert (await client.get(f"/fhir/Patient/{first['id']}")).json() == first

    only = tmp_path / "only"
    r = hc(url, "export", "--out", str(only), "--type", "Patient,Organization")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in only.glob("*.ndjson")) == ["Organization.ndjson", "Patient.ndjson"]

    # What was exported imports again into an empty database with the same counts.
    again = f"sqlite:///{tmp_path / 'reimport.db'}"
    r = hc(again, "import", *map(str, files.values()))
    assert r.returncode == 0, r.stderr
    reimported = await type_counts(again)
    reimported.pop("versions")
    assert reimported == counts


# -- backup and restore -----------------------------------------------------------------------------------


async def test_backup_restore_gives_the_original_back(
    fresh_database_url: str, fixtures: Path, tmp_path: Path
) -> None:
    url = fresh_database_url
    r = hc(url, "import", *bulk_files(fixtures))
    assert r.returncode == 0, r.stderr
    original = await type_counts(url)

    backup = tmp_path / "backups" / "housecall.backup"
    r = hc(url, "backup", str(backup))
    assert r.returncode == 0, r.stderr
    assert backup.exists()
    assert backup.stat().st_size > 0

    r = hc(url, "import", small_bundle(fixtures))
    assert r.returncode == 0, r.stderr
    async for client in _client(url):
        extra = (
            await client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "other"})
        ).json()
        # A Patient that was in the backup: not the one just created (its random id may sort first).
        page = (await client.get("/fhir/Patient?_count=2&_sort=_id")).json()["entry"]
        first_patient = next(e["resource"] for e in page if e["resource"]["id"] != extra["id"])
        assert (await client.delete(f"/fhir/Patient/{first_patient['id']}")).status_code == 204
    changed = await type_counts(url)
    assert changed != original

    r = hc(url, "restore", str(backup))  # no --yes and no terminal: refuses
    assert r.returncode != 0
    assert await type_counts(url) == changed

    r = hc(url, "restore", "--yes", str(backup))
    assert r.returncode == 0, r.stderr
    assert await type_counts(url) == original
    async for client in _client(url):
        assert (await client.get(f"/fhir/Patient/{extra['id']}")).status_code == 404
        r = await client.get(f"/fhir/Patient/{first_patient['id']}")
        assert r.status_code == 200
        assert r.json() == first_patient
        # The restored database is fully usable: writes and searches work.
        r = await client.post(
            "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "After"}]}
        )
        assert r.status_code == 201, r.text
        assert (await client.get("/fhir/Patient?family=After&_summary=count")).json()["total"] == 1
    r = hc(url, "check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_restore_of_a_missing_backup_fails(fresh_database_url: str, tmp_path: Path) -> None:
    r = hc(fresh_database_url, "restore", "--yes", str(tmp_path / "nope.backup"))
    assert r.returncode == 1
    assert "no such backup" in flat(r.stderr)


# -- demo ----------------------------------------------------------------------------------------------------


async def test_demo_load_only_twice_makes_no_duplicates(fresh_database_url: str) -> None:
    from housecall.demo.generate import demo_bundle, demo_summary

    url = fresh_database_url
    day = dt.date.today()
    expected = dict(demo_summary(demo_bundle()))

    r = hc(url, "demo", "--load-only")
    assert r.returncode == 0, r.stderr
    first = await type_counts(url, DEMO_ORG)
    versions = first.pop("versions")
    assert first == expected
    assert versions == sum(expected.values())

    r = hc(url, "demo", "--load-only")
    assert r.returncode == 0, r.stderr
    second = await type_counts(url, DEMO_ORG)
    second_versions = second.pop("versions")
    assert second == expected, "loading the demo again made duplicates"
    if dt.date.today() == day:  # the time-relative data moves with the date
        assert second_versions == versions, "loading the same demo again made new versions"
    for name, n in expected.items():
        assert name in r.stdout
        assert str(n) in r.stdout
    assert Counter(expected).total() == versions


def test_serve_refuses_a_database_behind_the_migrations(fresh_database_url: str) -> None:
    from alembic import command

    from housecall.core import migrate

    command.downgrade(migrate.alembic_config(fresh_database_url), "0001")
    r = hc(fresh_database_url, "serve", "--port", "1")  # refuses before it would bind
    assert r.returncode == 1
    assert "housecall migrate" in " ".join(r.stderr.split())
    assert hc(fresh_database_url, "check").returncode == 1
    assert hc(fresh_database_url, "migrate").returncode == 0
    assert hc(fresh_database_url, "check").returncode == 0
