"""Bulk loading of FHIR files (CLI ``import``, the demo): Bundles and NDJSON, idempotently.

- transaction / batch Bundles are processed exactly as ``POST /fhir`` would;
- collection Bundles and NDJSON lines become transaction entries: a resource with an id is a PUT
  (an unchanged resource is left alone), one without an id a POST under its fullUrl's identity.
Loading the same files twice therefore creates no duplicates and no new versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from housecall.access.policy import Access
from housecall.core.db import Database
from housecall.core.settings import Settings
from housecall.fhir import bundles, jsonio
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError

NDJSON_CHUNK = 1000


@dataclass
class ImportReport:
    files: int = 0
    resources: int = 0
    created: int = 0
    updated: int = 0
    errors: list[str] = field(default_factory=list)


def as_transaction(
    resources: list[dict[str, Any]], full_urls: list[str | None] | None = None
) -> dict[str, Any]:
    entries = []
    for n, res in enumerate(resources):
        rt = res.get("resourceType") if isinstance(res, dict) else None
        full_url = full_urls[n] if full_urls else None
        if isinstance(res, dict) and res.get("id"):
            request = {"method": "PUT", "url": f"{rt}/{res['id']}"}
        else:
            request = {"method": "POST", "url": str(rt)}
        entry: dict[str, Any] = {"resource": res, "request": request}
        if full_url:
            entry["fullUrl"] = full_url
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def units(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Split a file into Bundles to process: (kind, bundle) with kind transaction or batch."""
    if path.suffix == ".ndjson":
        chunk: list[dict[str, Any]] = []
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    resource = jsonio.loads(line)
                    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                        raise ValueError(f"{path}, line {number}: not a FHIR resource (no resourceType)")
                    chunk.append(resource)
                    if len(chunk) >= NDJSON_CHUNK:
                        yield "transaction", as_transaction(chunk)
                        chunk = []
        if chunk:
            yield "transaction", as_transaction(chunk)
        return
    doc = jsonio.loads(path.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a FHIR resource")
    if doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
        yield doc["type"], doc
    elif doc.get("resourceType") == "Bundle" and doc.get("type") == "collection":
        entries = [e for e in doc.get("entry") or [] if isinstance(e, dict) and "resource" in e]
        yield (
            "transaction",
            as_transaction([e["resource"] for e in entries], [e.get("fullUrl") for e in entries]),
        )
    else:
        yield "transaction", as_transaction([doc])


def count_entries(path: Path) -> int:
    """Entries the file will load; raises ValueError naming the file (and line) when it is not
    FHIR, so that an import can refuse a bad file before it has loaded any of the good ones."""
    if path.suffix == ".ndjson":
        count = 0
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise ValueError(f"{path}, line {number}: not JSON") from None
                    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
                        raise ValueError(f"{path}, line {number}: not a FHIR resource (no resourceType)")
                    count += 1
        return count
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        raise ValueError(f"{path}: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise ValueError(f"{path}: not a FHIR resource (no resourceType)")
    if doc["resourceType"] == "Bundle" and doc.get("type") != "document":
        return len(doc.get("entry") or [])
    return 1


def _tally(report: ImportReport, entries: list[bundles.Entry]) -> None:
    for e in entries:
        report.resources += 1
        if e.error is not None:
            report.errors.append(f"entry {e.index}: {e.error}")
        elif e.outcome is not None and e.outcome.status == 201:
            report.created += 1
        else:
            report.updated += 1


async def load_bundle(
    db: Database, settings: Settings, org_id: str, kind: str, bundle: dict[str, Any]
) -> list[bundles.Entry]:
    """Process one Bundle as ``POST /fhir`` would (without rendering a response Bundle), as
    Housecall itself acting in organization ``org_id``."""
    limit = max(settings.max_bundle_entries, 100_000)
    access = Access.system(org_id)
    if kind == "batch":
        return await bundles.run_batch(
            lambda conn: ix.Ctx(conn, settings, "", access), db.transaction, bundle, limit
        )
    big = settings.model_copy(update={"max_bundle_entries": limit})
    async with db.transaction() as conn:
        return await bundles.run_transaction(ix.Ctx(conn, big, "", access), bundle)


async def import_paths(
    db: Database,
    settings: Settings,
    org_id: str,
    paths: list[Path],
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    for path in paths:
        report.files += 1
        for kind, bundle in units(path):
            try:
                entries = await load_bundle(db, settings, org_id, kind, bundle)
            except FhirError as exc:
                exc.diagnostics = f"{path}: {exc.diagnostics}"
                raise
            _tally(report, entries)
            if progress:
                progress(len(bundle.get("entry") or []))
    return report


def expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix in (".json", ".ndjson"))
        else:
            out.append(p)
    return out
