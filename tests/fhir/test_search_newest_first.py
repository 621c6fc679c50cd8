"""A patient's resources of one code, newest first (``_sort=-date``), read from one index range;
and a code searched without its system, for one patient, read from that patient's rows only.

Token rows carry their resource's date as a sort key (``schema.sp_token``, decision 0031), so
``Observation?subject=Patient/A&code=system|C&_sort=-date`` walks the patient's rows of that code
newest first and stops after a page. These tests hold that path to the general one (which sorts
every match by its date rows): the same resources in the same order, page by page, through
periods, partial dates, missing dates, updates, deletions and codings repeated - and, on both
engines, that the database reads about a page of index rows, not every match.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest

from housecall.core.db import Conn
from housecall.fhir.search import SearchResult, parse_search, run_search
from tests.conftest import _client
from tests.support import TEST_ORG

LOINC = "http://loinc.org"
HR = "8867-4"
NEWEST = f"code={LOINC}|{HR}&_sort=-date"
# Sorted by date and then by id: the general path, with the tie-break the driven path implies.
GENERAL = f"code={LOINC}|{HR}&_sort=-date,_id"


CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def reading(
    patient: str, when: dict[str, Any] | None, code: str = HR, *, twice: bool = False, n: int = 0
) -> dict[str, Any]:
    coding = [{"system": LOINC, "code": code, "display": "Heart rate"}]
    if twice:  # the same code again with another display: two token rows, one match
        coding.append({"system": LOINC, "code": code, "display": "Pulse"})
    category = [{"coding": [{"system": CATEGORY, "code": ("vital-signs", "laboratory", "survey")[n % 3]}]}]
    obs: dict[str, Any] = {
        "resourceType": "Observation", "status": ("final", "amended", "preliminary", "final")[n % 4],
        "category": category, "code": {"coding": coding}, "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 70, "unit": "/min"},
    }  # fmt: skip
    return obs | (when or {})


@pytest.fixture
async def api(fresh_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(fresh_database_url):
        yield client


async def create(api: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def every_page(api: httpx.AsyncClient, query: str) -> list[str]:
    ids: list[str] = []
    url: str | None = f"/fhir/Observation?{query}"
    while url:
        r = await api.get(url)
        assert r.status_code == 200, r.text
        bundle = r.json()
        ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return ids


async def test_newest_first_matches_the_general_sort_page_by_page(api: httpx.AsyncClient) -> None:
    a = (await create(api, {"resourceType": "Patient"}))["id"]
    b = (await create(api, {"resourceType": "Patient"}))["id"]
    rng = random.Random(31)
    whens: list[dict[str, Any] | None] = [
        {"effectiveDateTime": "2024-03-01T08:00:00Z"},
        {"effectiveDateTime": "2024-03-01T08:00:00Z"},  # a tie: broken by id
        {"effectiveDateTime": "2024-03"},  # partial: its latest instant is the end of March
        {"effectiveDateTime": "2023"},
        {"effectivePeriod": {"start": "2024-02-27T00:00:00Z", "end": "2024-03-05T00:00:00Z"}},
        {"effectivePeriod": {"start": "2024-01-01T00:00:00Z"}},  # open: latest is unbounded
        {"effectiveInstant": "2024-03-02T09:30:00.123Z"},
        None,  # no date: last
        None,
    ]
    whens += [{"effectiveDateTime": f"2024-0{rng.randint(1, 9)}-{rng.randint(10, 28)}T0{rng.randint(0, 9)}:00:00Z"}
              for _ in range(25)]  # fmt: skip
    mine = [(await create(api, reading(a, when, n=n)))["id"] for n, when in enumerate(whens)]
    twice = (await create(api, reading(a, {"effectiveDateTime": "2024-04-01"}, twice=True)))["id"]
    # Not matches: another patient's, another code, and one deleted.
    await create(api, reading(b, {"effectiveDateTime": "2025-01-01"}))
    await create(api, reading(a, {"effectiveDateTime": "2025-01-01"}, code="8480-6"))
    gone = (await create(api, reading(a, {"effectiveDateTime": "2025-01-01"})))["id"]
    assert (await api.delete(f"/fhir/Observation/{gone}")).status_code in (200, 204)
    # An update moves a reading: the newest now, then back among the oldest.
    moved = await create(api, reading(a, {"effectiveDateTime": "2020-01-01"}))
    moved["effectiveDateTime"] = "2026-01-01T00:00:00Z"
    assert (await api.put(f"/fhir/Observation/{moved['id']}", json=moved)).status_code == 200

    for subject in (f"subject=Patient/{a}", f"patient={a}", f"subject={a}"):
        for count in (1, 4, 7, 50):
            newest = await every_page(api, f"{subject}&{NEWEST}&_count={count}")
            assert newest == await every_page(api, f"{subject}&{GENERAL}&_count={count}")
        assert sorted(newest) == sorted([*mine, twice, moved["id"]])
        assert newest[:2] == [mine[5], moved["id"]]  # the open period, then the update
        assert newest[-2:] == sorted(mine[7:9])  # the two without a date, by id
    r = await api.get(f"/fhir/Observation?subject=Patient/{a}&{NEWEST}&_total=accurate&_count=2")
    assert r.json()["total"] == len(mine) + 2
    # With another filter on top (a date range) the newest-first rows are filtered like any other.
    ranged = f"subject=Patient/{a}&date=ge2024-03-01&date=lt2024-04-01"
    assert await every_page(api, f"{ranged}&{NEWEST}&_count=3") == await every_page(
        api, f"{ranged}&{GENERAL}"
    )
    assert await every_page(api, f"subject=Patient/{b}&{NEWEST}") == await every_page(
        api, f"subject=Patient/{b}&{GENERAL}"
    )
    # Several system|code values (merged ranges), filters on top of the driving one (each asked of
    # the driving rows one at a time, negated ones too), and searches it does not drive (a code
    # without its system) give the same. The clinician's chart asks for a patient's final results
    # with the first.
    for filters in (
        f"category={CATEGORY}|vital-signs,{CATEGORY}|laboratory&status=final,amended,corrected",
        f"category={CATEGORY}|laboratory",
        f"code={LOINC}|{HR},{LOINC}|8480-6&status=final",
        f"code={LOINC}|{HR}&status:not=final",
        f"code={LOINC}|{HR}&category:missing=false&_id={','.join(mine[:20])}",
        f"code={LOINC}|{HR},{LOINC}|8480-6&category={CATEGORY}|vital-signs,{CATEGORY}|survey",
        "category=vital-signs,laboratory&status=final,amended",
        f"code={HR}",
        f"code={HR},8480-6&status=final",
    ):
        query = f"patient={a}&{filters}"
        newest = await every_page(api, f"{query}&_sort=-date&_count=3")
        assert newest == await every_page(api, f"{query}&_sort=-date,_id"), filters
        assert newest, filters


class Recording:
    """A connection that remembers the statements it ran (and runs them for real)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.statements: list[tuple[str, Sequence[Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.statements.append((sql, args))
        return await self.conn.fetch(sql, *args)


async def store_readings(api: httpx.AsyncClient, readings: list[dict[str, Any]]) -> None:
    """One transaction Bundle of ``readings``; on PostgreSQL, fresh statistics for the planner."""
    entries = [{"resource": o, "request": {"method": "POST", "url": "Observation"}} for o in readings]
    r = await api.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.text
    db = api._transport.app.state.db  # type: ignore[attr-defined]
    if db.dialect == "postgresql":
        async with db.reader() as conn:  # outside a transaction, as VACUUM must be
            await conn.execute("VACUUM ANALYZE sp_token")
            await conn.execute("ANALYZE resource")


async def explained(
    api: httpx.AsyncClient,
    query: list[tuple[str, str]],
    *,
    generic: bool = False,
    restrict: Callable[[Any], str | None] | None = None,
) -> tuple[SearchResult, Any]:
    """The search's result and the plan of its one statement: ``EXPLAIN (ANALYZE, BUFFERS)`` as
    JSON on PostgreSQL, the steps of ``EXPLAIN QUERY PLAN`` joined by " / " on SQLite. ``generic``:
    PostgreSQL's plan made without the parameters' values, as a prepared statement gets after five
    runs; ``restrict``: an access condition, as ``run_search`` takes it."""
    db = api._transport.app.state.db  # type: ignore[attr-defined]
    req = parse_search("Observation", query, strict=True, default_count=20, max_count=1000)
    async with db.reader() as conn:
        recording = Recording(conn)
        result = await run_search(recording, req, org_id=TEST_ORG, restrict=restrict)  # type: ignore[arg-type]
        ((sql, args),) = recording.statements
        if db.dialect == "postgresql":
            await conn.execute(f"SET plan_cache_mode = {'force_generic_plan' if generic else 'auto'}")
            try:
                explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"
                (plan,) = json.loads(await conn.fetchval(explain, *args))
            finally:
                await conn.execute("RESET plan_cache_mode")
            return result, plan["Plan"]
        return result, " / ".join(
            str(row[-1]) for row in await conn.fetch(f"EXPLAIN QUERY PLAN {sql}", *args)
        )


async def test_a_page_of_the_newest_reads_a_page_of_index_rows(fresh_database_url: str) -> None:
    async for api in _client(fresh_database_url):
        patient = (await create(api, {"resourceType": "Patient"}))["id"]
        await store_readings(
            api,
            [reading(patient, {"effectiveDateTime": f"2024-01-01T00:00:{i % 60:02d}Z"}) for i in range(400)],
        )
        query = [
            ("subject", f"Patient/{patient}"),
            ("code", f"{LOINC}|{HR}"),
            ("_sort", "-date"),
            ("_count", "10"),
        ]
        result, plan = await explained(api, query)
        assert len(result.matches) == 10 and result.has_more
        if isinstance(plan, dict):
            read = index_rows_read(plan, "ix_sp_token_lookup")
            assert read <= 20, f"read {read} of 400 token rows for a page of 10"
        else:
            assert "ix_sp_token_lookup" in plan and "ORDER BY" not in plan, plan


def in_compartment(patient: str) -> Callable[[Any], str]:
    """A clinician's access condition on a search (the form ``access.policy`` gives it)."""
    return lambda builder: (
        "EXISTS (SELECT 1 FROM compartment c WHERE c.res_type = r.res_type AND c.res_id = r.res_id "
        f"AND c.patient_id IN ({builder.sql.p(patient)}))"
    )


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_filters_on_top_of_the_newest_still_read_a_page(fresh_database_url: str, generic: bool) -> None:
    """Other filters, several codes and the access condition are asked of the driving rows one at a
    time: a page of 10 reads about 10 index rows of the driving range on PostgreSQL, even in the
    plan a prepared statement gets after five runs, made without knowing that this patient has 600
    matches. SQLite walks one range in order too; several ranges it sorts."""
    async for api in _client(fresh_database_url):
        patient, other = [(await create(api, {"resourceType": "Patient"}))["id"] for _ in range(2)]
        await store_readings(
            api,
            [reading(patient, {"effectiveDateTime": f"2024-01-{1 + i % 28:02d}T00:00:{i % 60:02d}Z"},
                     code=(HR, "8480-6")[i % 2], n=i % 2 * 3) for i in range(1200)]
            + [reading(other, {"effectiveDateTime": "2024-02-01"}, n=k) for k in range(300)],
        )  # fmt: skip
        for query, ranges in (
            ([("subject", f"Patient/{patient}"), ("code", f"{LOINC}|{HR}"), ("status", "final")], 1),
            ([("patient", patient), ("category", f"{CATEGORY}|vital-signs,{CATEGORY}|laboratory"),
              ("status", "final,amended,corrected")], 2),
            ([("patient", patient), ("code", f"{LOINC}|{HR},{LOINC}|8480-6"), ("category:not", "survey")], 2),
        ):  # fmt: skip
            result, plan = await explained(
                api,
                [*query, ("_sort", "-date"), ("_count", "10")],
                generic=generic,
                restrict=in_compartment(patient),
            )
            general = await explained(api, [*query, ("_sort", "-date,_id"), ("_count", "10")])
            assert [m.res_id for m in result.matches] == [m.res_id for m in general[0].matches], query
            assert len(result.matches) == 10 and result.has_more
            if isinstance(plan, dict):
                read = index_rows_read(plan, "ix_sp_token_lookup")
                assert read <= 30, f"read {read} lookup rows of 1,200 for a page of 10: {query}"
            elif ranges == 1:
                assert "USE TEMP B-TREE FOR ORDER BY" not in plan and "ix_sp_token_owner" in plan, plan


async def test_a_code_without_its_system_reads_only_the_patients_rows(fresh_database_url: str) -> None:
    """``patient=X&status=final``: the token rows of the code ``final`` are one range per patient
    (``pat`` follows ``code`` in the lookup index), not every patient's rows of ``final``."""
    async for api in _client(fresh_database_url):
        few, many = [(await create(api, {"resourceType": "Patient"}))["id"] for _ in range(2)]
        dated = {"effectiveDateTime": "2024-01-01"}
        await store_readings(api, [reading(patient, dated) for patient in [few] * 3 + [many] * 2997])
        for query in (
            [("patient", few), ("status", "final")],
            [("subject", f"Patient/{few}"), ("category", "vital-signs")],
        ):
            result, plan = await explained(api, query)
            assert len(result.matches) == 3
            if isinstance(plan, dict):
                # The other patient's 2,997 rows of the code span dozens of index pages.
                pages = index_pages_read(plan, "ix_sp_token_lookup")
                assert pages <= 6, f"read {pages} index pages for 3 matches of {query}"
            else:
                assert "ix_sp_token_lookup (res_type=? AND param=? AND code=? AND pat=?)" in plan, plan


def index_nodes(node: dict[str, Any], index: str) -> list[dict[str, Any]]:
    """The nodes of an ``EXPLAIN (FORMAT JSON)`` plan that scan ``index``."""
    own = [node] if node.get("Index Name") == index else []
    return own + [n for child in node.get("Plans", []) for n in index_nodes(child, index)]


def index_pages_read(plan: dict[str, Any], index: str) -> int:
    return sum(
        n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0) for n in index_nodes(plan, index)
    )


def index_rows_read(plan: dict[str, Any], index: str) -> int:
    return sum(n.get("Actual Rows", 0) * n.get("Actual Loops", 1) for n in index_nodes(plan, index))


@pytest.mark.parametrize(
    ("query", "driver"),
    [
        ("subject=Patient/a&code=http://loinc.org|8867-4&_sort=-date", 1),
        ("patient=a&status=final&code=http://loinc.org|8867-4&_sort=-date", 2),
        ("subject=Patient/a&code=http://loinc.org|8867-4,http://loinc.org|8480-6&_sort=-date", 1),
        ("subject=Patient/a&code=http://loinc.org|8867-4,8480-6&_sort=-date", None),  # one without
        (
            "subject=Patient/a&code=" + ",".join(f"http://loinc.org|{n}" for n in range(9)) + "&_sort=-date",
            None,
        ),
        # The filter with the fewest values drives.
        ("patient=a&category=s|vital-signs,s|laboratory&code=http://loinc.org|8867-4&_sort=-date", 2),
        ("patient=a&category=vital-signs&_sort=-date", None),  # no system: not one range
        ("code=8867-4&subject=Patient/a&_sort=-date", None),
        ("code=8867-4&subject=a&_sort=-date", None),  # a bare id: subject may name a Group
        ("subject=Patient/a&code=http://loinc.org|8867-4&_sort=date", None),  # oldest first
        ("subject=Patient/a&code=http://loinc.org|8867-4&_sort=-date,_id", None),
        ("subject=Patient/a&code=http://loinc.org|8867-4", None),  # the default order
        ("code=http://loinc.org|8867-4&_sort=-date", None),  # no patient
        ("subject=Patient/a&date=ge2024&_sort=-date", None),  # no token filter
        ("subject=Patient/a&code:text=heart&_sort=-date", None),
        ("subject=Patient/a&code:not=8867-4&_sort=-date", None),
    ],
)
def test_which_searches_read_the_newest_rows_first(query: str, driver: int | None) -> None:
    from urllib.parse import parse_qsl

    from housecall.fhir.search import SearchBuilder

    req = parse_search("Observation", parse_qsl(query), strict=True, default_count=20, max_count=1000)
    found = SearchBuilder().date_driver(req)
    assert (found[0] if found else None) == driver
