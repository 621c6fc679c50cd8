"""The 30 Synthea transaction Bundles and the bulk NDJSON export load idempotently, on both engines,
through ``POST /fhir`` and through ``housecall import``.

Identity rule (src/housecall/fhir/bundles.py): a POST entry whose fullUrl is ``urn:uuid:<uuid>`` is
stored under that uuid, so the Organizations and Practitioners that several Bundles share are stored
once and the expected count per type is the number of distinct fullUrls of that type.

Versions: a POST under an identity that is already stored is a match and changes nothing, so every
resource has exactly one version however often the files are loaded - even the 74 shared resources
that are *not* the same in every file (the directory Bundles ``hospitalInformation…`` and
``practitionerInformation…`` carry Synthea's utilization extensions, the copies inside the patient
Bundles do not): the first copy loaded is the one kept.

``synthea-bulk-ndjson-10-partial/log.ndjson`` is not FHIR: it is the bulk-data client's export log
(one JSON event per line: kickoff, status_complete, manifest_complete, export_complete, with
``exportId``/``timestamp``/``eventId``/``eventDetail`` and no ``resourceType``). It is left out of the
import and checked to be refused on its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _client

FHIR = {"Content-Type": "application/fhir+json"}
SYNTHEA_FILES = 30
DIRECTORY_TYPES = ("Organization", "Practitioner")
SUMMARY = re.compile(
    r"(\d+) files, (\d+) entries: (\d+) created, (\d+) already present or updated, (\d+) failed"
)


def synthea_files(fixtures: Path) -> list[Path]:
    files = sorted((fixtures / "synthea").glob("*.json"))
    assert len(files) == SYNTHEA_FILES, f"expected {SYNTHEA_FILES} Synthea Bundles, found {len(files)}"
    # The README's load order: the directory Bundles first, then the patients.
    return sorted(files, key=lambda p: (0 if "Information" in p.name else 1, p.name))


def ndjson_files(fixtures: Path) -> list[Path]:
    files = sorted((fixtures / "synthea-bulk-ndjson-10-partial").glob("*.ndjson"))
    return [p for p in files if p.name != "log.ndjson"]


def canonical(resource: dict[str, Any]) -> str:
    return json.dumps(resource, sort_keys=True, separators=(",", ":"))


@dataclass
class Expected:
    """What loading the fixture Bundles should store, worked out from the files alone."""

    files: list[Path]
    bundles: list[dict[str, Any]] = field(default_factory=list)
    type_of: dict[str, str] = field(default_factory=dict)  # fullUrl -> resource type

    def __post_init__(self) -> None:
        for path in self.files:
            bundle = json.loads(path.read_bytes())
            assert bundle["type"] == "transaction"
            self.bundles.append(bundle)
            for e in bundle["entry"]:
                assert e["request"]["method"] == "POST"
                assert e["fullUrl"].startswith("urn:uuid:")
                self.type_of[e["fullUrl"]] = e["resource"]["resourceType"]

    def counts(self) -> Counter[str]:
        return Counter(self.type_of.values())

    def versions_after(self, loads: list[int]) -> Counter[str]:
        """History rows per type after loading the Bundles at these indexes, in this order: one
        version when an identity is first stored, none after that."""
        seen: set[str] = set()
        versions: Counter[str] = Counter()
        for n in loads:
            for e in self.bundles[n]["entry"]:
                if e["fullUrl"] not in seen:
                    versions[e["resource"]["resourceType"]] += 1
                    seen.add(e["fullUrl"])
        return versions

    def rounds(self, n: int) -> list[int]:
        return list(range(len(self.bundles))) * n

    def varying(self) -> set[str]:
        """fullUrls whose content is not the same in every file."""
        seen: dict[str, set[str]] = defaultdict(set)
        for bundle in self.bundles:
            for e in bundle["entry"]:
                seen[e["fullUrl"]].add(canonical(e["resource"]))
        return {url for url, contents in seen.items() if len(contents) > 1}


async def type_counts(client: httpx.AsyncClient, types: list[str]) -> dict[str, int]:
    out = {}
    for t in types:
        r = await client.get(f"/fhir/{t}?_summary=count")
        assert r.status_code == 200, r.text
        out[t] = r.json()["total"]
    return out


async def history_counts(client: httpx.AsyncClient, types: list[str]) -> dict[str, int]:
    out = {}
    for t in types:
        r = await client.get(f"/fhir/{t}/_history?_count=0")
        assert r.status_code == 200, r.text
        out[t] = r.json()["total"]
    return out


async def system_versions(client: httpx.AsyncClient) -> int:
    r = await client.get("/fhir/_history?_count=0")
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


async def post_all(client: httpx.AsyncClient, files: list[Path]) -> Counter[str]:
    """POST every Bundle as a transaction; the response statuses, tallied."""
    statuses: Counter[str] = Counter()
    for path in files:
        raw = path.read_bytes()
        r = await client.post("/fhir", content=raw, headers=FHIR)
        assert r.status_code == 200, f"{path.name}: {r.status_code} {r.text[:500]}"
        body = r.json()
        assert body["type"] == "transaction-response"
        assert len(body["entry"]) == len(json.loads(raw)["entry"]), path.name
        statuses.update(e["response"]["status"] for e in body["entry"])
    return statuses


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [v for k, v in node.items() if k == "reference" and isinstance(v, str)]
        for k, v in node.items():
            if k != "reference":
                out += references(v)
        return out
    if isinstance(node, list):
        return [r for item in node for r in references(item)]
    return []


async def test_synthea_transactions_load_idempotently(
    fresh_client: httpx.AsyncClient, fixtures: Path
) -> None:
    expected = Expected(synthea_files(fixtures))
    counts = expected.counts()
    types = sorted(counts)
    n_entries = sum(len(b["entry"]) for b in expected.bundles)

    statuses = await post_all(fresh_client, expected.files)
    assert set(statuses) <= {"201 Created", "200 OK"}, statuses
    assert statuses["201 Created"] == sum(counts.values())  # one create per distinct fullUrl
    assert await type_counts(fresh_client, types) == dict(counts)
    assert await history_counts(fresh_client, types) == dict(expected.versions_after(expected.rounds(1)))

    statuses = await post_all(fresh_client, expected.files)
    assert statuses == Counter({"200 OK": n_entries}), "the second load must create nothing"
    assert await type_counts(fresh_client, types) == dict(counts)
    # One version per resource, even for the shared resources whose copies differ between files.
    assert await history_counts(fresh_client, types) == dict(counts)
    varying = Counter(expected.type_of[u] for u in expected.varying())
    assert set(varying) <= set(DIRECTORY_TYPES)
    assert sum(varying.values()) == 74

    # Reloading a patient Bundle whose shared resources differ from the stored copies changes nothing.
    patient_file = 2
    before = await system_versions(fresh_client)
    await post_all(fresh_client, expected.files[patient_file : patient_file + 1])
    assert await system_versions(fresh_client) == before, "reloading a Bundle made new versions"


async def test_synthea_references_resolve(client: httpx.AsyncClient, fixtures: Path) -> None:
    """References are rewritten from urn:uuid to Type/id and point at stored resources."""
    path = next(p for p in synthea_files(fixtures) if p.name.startswith("Garrett_Thompson"))
    bundle = json.loads(path.read_bytes())
    r = await client.post("/fhir", content=path.read_bytes(), headers=FHIR)
    assert r.status_code == 200, r.text[:500]

    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    pid = patient_entry["fullUrl"].removeprefix("urn:uuid:")
    assert (await client.get(f"/fhir/Patient/{pid}")).status_code == 200

    in_bundle: dict[str, set[str]] = defaultdict(set)
    for e in bundle["entry"]:
        in_bundle[e["resource"]["resourceType"]].add(e["fullUrl"].removeprefix("urn:uuid:"))

    r = await client.get(f"/fhir/Observation?subject=Patient/{pid}&_count=1000")
    observations = [e["resource"] for e in r.json()["entry"]]
    assert {o["id"] for o in observations} == in_bundle["Observation"]
    assert all(o["subject"]["reference"] == f"Patient/{pid}" for o in observations)

    r = await client.get(f"/fhir/Patient/{pid}/$everything")
    assert r.status_code == 200, r.text[:500]
    everything = [e["resource"] for e in r.json()["entry"]]
    got: dict[str, set[str]] = defaultdict(set)
    for res in everything:
        got[res["resourceType"]].add(res["id"])
    # Everything in the patient's Bundle except the directory resources is in their compartment.
    want = {t: ids for t, ids in in_bundle.items() if t not in DIRECTORY_TYPES}
    assert dict(got) == want

    refs = [ref for res in everything for ref in references(res)]
    assert refs, "the patient's resources hold references"
    assert not [ref for ref in refs if ref.startswith("urn:uuid:")], "urn:uuid references were not rewritten"
    targets: dict[str, set[str]] = defaultdict(set)
    for ref in refs:
        if ref.startswith("#"):
            continue  # a contained resource
        res_type, _, res_id = ref.partition("/")
        assert res_id, f"not a Type/id reference: {ref}"
        assert "/" not in res_id, f"not a Type/id reference: {ref}"
        targets[res_type].add(res_id)
    for res_type, ids in targets.items():
        r = await client.get(f"/fhir/{res_type}?_id={','.join(sorted(ids))}&_count=1000")
        found = {e["resource"]["id"] for e in r.json().get("entry", [])}
        assert found == ids, f"{res_type}: unresolved references {sorted(ids - found)}"


def run_import(database_url: str, paths: list[Path]) -> tuple[int, str, str]:
    env = {**os.environ, "HOUSECALL_DATABASE_URL": database_url, "COLUMNS": "250"}
    proc = subprocess.run(
        [sys.executable, "-m", "housecall.cli", "import", *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def import_summary(stdout: str) -> dict[str, int]:
    m = SUMMARY.search(" ".join(stdout.split()))
    assert m, f"no import summary in {stdout!r}"
    keys = ("files", "entries", "created", "present", "failed")
    return dict(zip(keys, map(int, m.groups()), strict=True))


async def test_cli_import_synthea_twice(fresh_database_url: str, fixtures: Path) -> None:
    expected = Expected(synthea_files(fixtures))
    counts = expected.counts()
    types = sorted(counts)
    n_entries = sum(len(b["entry"]) for b in expected.bundles)

    runs = []
    for _ in range(2):
        rc, out, err = run_import(fresh_database_url, expected.files)
        assert rc == 0, err[-2000:]
        runs.append(import_summary(out))
    first, second = runs
    assert first == {"files": 30, "entries": n_entries, "created": sum(counts.values()),
                     "present": n_entries - sum(counts.values()), "failed": 0}  # fmt: skip
    assert second == {"files": 30, "entries": n_entries, "created": 0, "present": n_entries, "failed": 0}

    async for client in _client(fresh_database_url):
        assert await type_counts(client, types) == dict(counts)
        assert await history_counts(client, types) == dict(expected.versions_after(expected.rounds(2)))


async def test_cli_import_bulk_ndjson_twice(fresh_database_url: str, fixtures: Path) -> None:
    files = ndjson_files(fixtures)
    lines = [json.loads(line) for p in files for line in p.read_bytes().splitlines() if line.strip()]
    counts = Counter(res["resourceType"] for res in lines)
    assert len(files) == 7
    assert sum(counts.values()) == 213
    assert all(res.get("id") for res in lines)

    rc, out, err = run_import(fresh_database_url, files)
    assert rc == 0, err[-2000:]
    assert import_summary(out) == {"files": 7, "entries": 213, "created": 213, "present": 0, "failed": 0}
    rc, out, err = run_import(fresh_database_url, files)
    assert rc == 0, err[-2000:]
    assert import_summary(out) == {"files": 7, "entries": 213, "created": 0, "present": 213, "failed": 0}

    async for client in _client(fresh_database_url):
        assert await type_counts(client, sorted(counts)) == dict(counts)
        # No new versions on the second import: one history row per resource.
        assert await history_counts(client, sorted(counts)) == dict(counts)
        # Content as exported (server meta aside), e.g. the first Patient line.
        first = next(res for res in lines if res["resourceType"] == "Patient")
        stored = (await client.get(f"/fhir/Patient/{first['id']}")).json()
        assert stored["meta"]["profile"] == first["meta"]["profile"]
        stored["meta"] = first["meta"]
        assert stored == first


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_cli_import_refuses_the_export_log(fresh_database_url: str, fixtures: Path) -> None:
    log = fixtures / "synthea-bulk-ndjson-10-partial" / "log.ndjson"
    events = [json.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    assert events
    assert all("eventId" in e and "resourceType" not in e for e in events)
    rc, _out, err = run_import(fresh_database_url, [log])
    assert rc == 1
    assert "Traceback" not in err
    message = " ".join(err.split())
    assert "log.ndjson, line 1: not a FHIR resource" in message, f"the error should name the file: {err!r}"
    async for client in _client(fresh_database_url):
        assert await system_versions(client) == 0


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_cli_import_of_a_folder_with_a_non_fhir_file_loads_nothing(
    fresh_database_url: str, fixtures: Path
) -> None:
    # The bulk-export folder holds log.ndjson beside the resources; the import checks every file
    # first, so it refuses the whole folder instead of stopping half-way.
    rc, _out, err = run_import(fresh_database_url, [fixtures / "synthea-bulk-ndjson-10-partial"])
    assert rc == 1
    assert "log.ndjson, line 1" in " ".join(err.split())
    async for client in _client(fresh_database_url):
        assert await system_versions(client) == 0
