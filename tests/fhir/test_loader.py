"""The bulk loader with worker processes stores exactly what it stores without them, on both engines:
the same resources, versions, index rows and compartments, the same copy of a resource that several
files share (the first loaded), the same errors naming the file and the entry, and the same Bundles
loaded before an error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from housecall.access.actor import Actor, ActorKind
from housecall.access.policy import Access, Grants
from housecall.core.db import Database, open_database
from housecall.core.settings import Settings
from housecall.fhir import bundles, loader
from tests.conftest import _client
from tests.support import TEST_ORG, drop_database, ensure_organization, new_database

# Tables whose rows must come out the same (the columns that do not hold a time of writing).
COMPARED = {
    "resource": "res_type, res_id, version, deleted",
    "resource_history": "res_type, res_id, version, deleted, method",
    "compartment": "res_type, res_id, patient_id",
    "sp_token": "res_type, res_id, param, system, code, text, pat",
    "sp_string": "res_type, res_id, param, norm, exact",
    "sp_reference": "res_type, res_id, param, target_type, target_id, url",
    "sp_date": "res_type, res_id, param, lo, hi",
    "sp_quantity": "res_type, res_id, param, value, system, code, unit",
    "sp_number": "res_type, res_id, param, value",
    "sp_uri": "res_type, res_id, param, value",
}


@pytest.fixture
def second_database_url(engine: str, tmp_path: Path) -> Iterator[str]:
    url = new_database(engine, tmp_path)
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def workers() -> Iterator[loader.Preparers]:
    # Made before the tests open any database (the workers are forked).
    with loader.preparers(2) as pool:
        assert pool is not None
        yield pool


async def connected(url: str) -> AsyncIterator[Database]:
    db = open_database(url)
    await db.connect()
    try:
        async with db.transaction() as conn:
            await ensure_organization(conn, TEST_ORG, "Default organization")
        yield db
    finally:
        await db.close()


async def load(
    url: str, paths: list[Path], pool: loader.Preparers | None
) -> tuple[loader.ImportReport | None, str | None, int]:
    """(report, or the error's text, entries the progress callback was told of)."""
    done = [0]
    async for db in connected(url):
        try:
            report = await loader.import_paths(
                db,
                Settings(database_url=url),
                TEST_ORG,
                paths,
                lambda n: done.__setitem__(0, done[0] + n),
                pool,
            )
        except Exception as exc:  # any failure stops the import; its kind and text are compared
            return None, f"{type(exc).__name__}: {exc}", done[0]
        return report, None, done[0]
    raise AssertionError("unreachable")


async def stored(url: str) -> dict[str, list[Any]]:
    """Every row of the store, the content without its meta.lastUpdated."""
    out: dict[str, list[Any]] = {}
    async for db in connected(url):
        async with db.reader() as conn:
            for table, columns in COMPARED.items():
                rows = await conn.fetch(f"SELECT {columns} FROM {table}")
                out[table] = sorted(tuple(r) for r in rows)
            contents = []
            for table in ("resource", "resource_history"):
                for res_type, res_id, version, content in await conn.fetch(
                    f"SELECT res_type, res_id, version, content FROM {table} WHERE content IS NOT NULL"
                ):
                    resource = json.loads(bytes(content))
                    assert resource["meta"].pop("lastUpdated")
                    contents.append((res_type, res_id, version, json.dumps(resource, sort_keys=True)))
            out["content"] = sorted(contents)
    return out


def synthea(fixtures: Path, *names: str) -> list[Path]:
    return [next((fixtures / "synthea").glob(f"{name}*.json")) for name in names]


def write_bundle(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return path


def post(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


async def test_workers_store_what_one_process_stores(
    fresh_database_url: str, second_database_url: str, fixtures: Path, workers: loader.Preparers
) -> None:
    # Patients before the directory Bundles: the copies of the shared Organizations and
    # Practitioners kept are the patients' (the directory's carry extensions the others lack).
    files = synthea(
        fixtures, "Luigi_Wiegand", "Garrett_Thompson", "hospitalInformation", "practitionerInformation"
    )
    total = sum(loader.count_entries(p) for p in files)
    alone, error, progress = await load(fresh_database_url, files, None)
    assert error is None
    assert progress == total
    with_workers, error, progress = await load(second_database_url, files, workers)
    assert error is None
    assert progress == total
    assert with_workers == alone
    assert alone is not None
    assert alone.created > 0
    assert alone.updated > 0  # shared resources met again
    assert await stored(second_database_url) == await stored(fresh_database_url)

    again, error, _ = await load(second_database_url, files, workers)
    assert error is None
    assert again is not None
    assert (again.created, again.updated) == (0, total)
    assert await stored(second_database_url) == await stored(fresh_database_url)


async def test_an_error_names_file_and_entry_and_stops_there(
    fresh_database_url: str,
    second_database_url: str,
    fixtures: Path,
    workers: loader.Preparers,
    tmp_path: Path,
) -> None:
    patient = {"resourceType": "Patient", "gender": "female"}
    bad = write_bundle(
        tmp_path / "bad.json",
        [
            post("urn:uuid:6a1e5a3c-1b2f-4c53-9d59-1f0e7d1c9a01", patient),
            post(
                "urn:uuid:6a1e5a3c-1b2f-4c53-9d59-1f0e7d1c9a02", {"resourceType": "Observation", "status": 7}
            ),
        ],
    )
    first, last = synthea(fixtures, "Luigi_Wiegand", "Garrett_Thompson")
    results = []
    for url, pool in ((fresh_database_url, None), (second_database_url, workers)):
        report, error, _ = await load(url, [first, bad, last], pool)
        assert report is None
        assert error is not None
        assert f"{bad}: transaction failed (entry 1): " in error
        assert "must be a JSON string, not number" in error
        results.append((error, await stored(url)))
    (error_alone, stored_alone), (error_workers, stored_workers) = results
    assert error_workers == error_alone
    assert stored_workers["resource"] == stored_alone["resource"]
    # The file before the bad one is stored; nothing of the bad one nor of the one after it.
    luigi = json.loads(first.read_bytes())
    assert len(stored_alone["resource"]) == len(luigi["entry"])


async def test_a_bundle_failing_in_the_database_stops_the_import_there(
    fresh_database_url: str, second_database_url: str, workers: loader.Preparers, tmp_path: Path
) -> None:
    """Only the database finds this error (the id is taken in another organization), while the
    next Bundle may already be stored beside it: that one is rolled back."""
    taken = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    clash = write_bundle(tmp_path / "clash.json", [post(f"urn:uuid:{taken}", {"resourceType": "Patient"})])
    later = "7c9e6679-7425-40de-944b-e07fc1f90ae8"
    after = write_bundle(
        tmp_path / "after.json", [post(f"urn:uuid:{later}", {"resourceType": "Patient", "gender": "male"})]
    )
    results = []
    for url, pool in ((fresh_database_url, None), (second_database_url, workers)):
        async for db in connected(url):
            async with db.transaction() as conn:
                await ensure_organization(conn, "elsewhere", "Another organization")
            await loader.import_paths(db, Settings(database_url=url), "elsewhere", [clash])
        report, error, _ = await load(url, [clash, after], pool)
        assert report is None
        assert error is not None
        rows = await stored(url)
        assert [r[1] for r in rows["resource"]] == [taken]  # the other organization's, nothing more
        results.append((error.split(":")[0], rows))
    assert results[1] == results[0]


async def test_a_bundle_that_needs_the_database_is_processed_in_order(
    fresh_database_url: str, workers: loader.Preparers, tmp_path: Path
) -> None:
    """A conditional reference is resolved when the files before have been stored."""
    identifier = {"system": "urn:example:mrn", "value": "loader-1"}
    first = write_bundle(
        tmp_path / "1.json",
        [
            post(
                "urn:uuid:0d5c7e88-3a53-4a4e-8b5e-3f1f3c1d2e01",
                {"resourceType": "Patient", "identifier": [identifier]},
            )
        ],
    )
    observation = {
        "resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": "Patient?identifier=urn:example:mrn|loader-1"},
    }  # fmt: skip
    second = write_bundle(
        tmp_path / "2.json", [post("urn:uuid:0d5c7e88-3a53-4a4e-8b5e-3f1f3c1d2e02", observation)]
    )
    report, error, _ = await load(fresh_database_url, [first, second], workers)
    assert error is None
    assert report is not None
    assert report.created == 2
    async for client in _client(fresh_database_url):
        obs = (await client.get("/fhir/Observation/0d5c7e88-3a53-4a4e-8b5e-3f1f3c1d2e02")).json()
        assert obs["subject"]["reference"] == "Patient/0d5c7e88-3a53-4a4e-8b5e-3f1f3c1d2e01"


async def test_a_deleted_resource_loaded_again_is_a_new_version(
    fresh_database_url: str, fixtures: Path, workers: loader.Preparers
) -> None:
    (path,) = synthea(fixtures, "Luigi_Wiegand")
    patient_id = next(
        e["fullUrl"].removeprefix("urn:uuid:")
        for e in json.loads(path.read_bytes())["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    await load(fresh_database_url, [path], workers)
    async for client in _client(fresh_database_url):
        before = (await client.get(f"/fhir/Patient/{patient_id}")).json()
        assert (await client.delete(f"/fhir/Patient/{patient_id}")).status_code == 204
    report, error, _ = await load(fresh_database_url, [path], workers)
    assert error is None
    assert report is not None
    assert report.created == 1
    async for client in _client(fresh_database_url):
        after = (await client.get(f"/fhir/Patient/{patient_id}")).json()
        assert after["meta"]["versionId"] == "3"
        for resource in (before, after):
            resource.pop("meta")
        assert after == before


def test_only_plain_creates_of_housecall_itself_are_prepared_ahead() -> None:
    patient = {"resourceType": "Patient", "gender": "other"}
    plain = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [post("urn:uuid:1f0c2b9e-8a7d-4c6b-9e5f-2a1b3c4d5e6f", patient)],
    }
    system = Access.system(TEST_ORG)
    prepared = bundles.prepare_creates(system, plain, 10)
    assert prepared is not None
    assert prepared[0].prepared is not None
    assert prepared[0].request["_id"] == "1f0c2b9e-8a7d-4c6b-9e5f-2a1b3c4d5e6f"

    clinician = Access(Actor(ActorKind.PRACTITIONER, TEST_ORG, account_id="a1"), Grants())
    assert bundles.prepare_creates(clinician, plain, 10) is None
    update = {
        **plain,
        "entry": [{"resource": {**patient, "id": "p1"}, "request": {"method": "PUT", "url": "Patient/p1"}}],
    }
    assert bundles.prepare_creates(system, update, 10) is None
    conditional = {
        **plain,
        "entry": [
            {
                **plain["entry"][0],
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x|1"},
            }
        ],
    }
    assert bundles.prepare_creates(system, conditional, 10) is None
