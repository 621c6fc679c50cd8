"""Bulk loading of FHIR files (CLI ``import``, the demo): Bundles and NDJSON, idempotently.

- transaction / batch Bundles are processed exactly as ``POST /fhir`` would;
- collection Bundles and NDJSON lines become transaction entries: a resource with an id is a PUT
  (an unchanged resource is left alone), one without an id a POST under its fullUrl's identity.
Loading the same files twice therefore creates no duplicates and no new versions.

With ``workers`` (``preparers``: a pool of processes), the workers read the files and prepare each
transaction of plain creates - parse, validate, resolve references, serialize and index
(``bundles.prepare_creates``) - while this process stores them, one Bundle after another in the
order given, each in its own database transaction, exactly as without workers: what is stored does
not depend on them. Any other Bundle (updates, conditional references) is read by a worker and
processed here as without workers. See docs/decisions/0026-parallel-import.md.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from housecall.access.policy import Access
from housecall.core.db import Database
from housecall.core.settings import Settings
from housecall.fhir import bundles, jsonio
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError
from housecall.fhir.indexing import IndexRows
from housecall.fhir.store import Write

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
        for lines in ndjson_chunks(path):
            yield "transaction", ndjson_transaction(path, lines)
        return
    yield document_unit(path, path.read_bytes())


Lines = list[tuple[int, bytes]]


def ndjson_chunks(path: Path) -> Iterator[Lines]:
    """The file's lines with their numbers, NDJSON_CHUNK at a time (blank lines left out)."""
    with path.open("rb") as fh:
        numbered = ((n, line) for n, line in enumerate(fh, 1) if line.strip())
        while chunk := list(islice(numbered, NDJSON_CHUNK)):
            yield chunk


def ndjson_transaction(path: Path, lines: Lines) -> dict[str, Any]:
    chunk: list[dict[str, Any]] = []
    for number, line in lines:
        resource = jsonio.loads(line)
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise ValueError(f"{path}, line {number}: not a FHIR resource (no resourceType)")
        chunk.append(resource)
    return as_transaction(chunk)


def document_unit(path: Path, data: bytes) -> tuple[str, dict[str, Any]]:
    doc = jsonio.loads(data)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a FHIR resource")
    if doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
        return doc["type"], doc
    if doc.get("resourceType") == "Bundle" and doc.get("type") == "collection":
        entries = [e for e in doc.get("entry") or [] if isinstance(e, dict) and "resource" in e]
        return "transaction", as_transaction(
            [e["resource"] for e in entries], [e.get("fullUrl") for e in entries]
        )
    return "transaction", as_transaction([doc])


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
    workers: Preparers | None = None,
) -> ImportReport:
    """Load the files in order, each Bundle (NDJSON: each chunk) in a transaction of its own;
    with ``workers``, they prepare the files ahead while this process stores them."""
    if workers is not None:
        return await _import_prepared(db, settings, org_id, paths, progress, workers)
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


# -- worker processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preparers:
    """Worker processes that read and prepare files for an import (``preparers``)."""

    pool: Executor
    size: int

    @property
    def ahead(self) -> int:
        """Files (NDJSON: chunks) prepared or being prepared while one is stored: enough to keep
        every worker busy, few enough to bound the memory held by prepared Bundles."""
        return 2 * self.size


@contextmanager
def preparers(size: int) -> Iterator[Preparers | None]:
    """``size`` worker processes (None for 0: everything in this process). They are forked, so they
    start with the modules already imported: make them before any thread or event loop starts."""
    if size < 1:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(size, mp_context=context)
    try:
        yield Preparers(pool, size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """One worker per core: this process and the database mostly wait on each other."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def count_all(paths: list[Path], workers: Preparers | None = None) -> int:
    """``count_entries`` of every file (in the workers when there are); raises for the first file,
    in order, that is not FHIR."""
    if workers is None:
        return sum(count_entries(p) for p in paths)
    return sum(workers.pool.map(count_entries, paths))


@dataclass(frozen=True)
class _Task:
    """A file for a worker to read: a JSON document, or ``lines`` of an NDJSON file."""

    path: Path
    lines: Lines | None
    first: bool  # the file's first task


def _tasks(paths: list[Path]) -> Iterator[_Task]:
    for path in paths:
        if path.suffix != ".ndjson":
            yield _Task(path, None, True)
            continue
        first = True
        for lines in ndjson_chunks(path):
            yield _Task(path, lines, first)
            first = False
        if first:  # nothing but blank lines
            yield _Task(path, [], True)


# What a worker sends back: (kind, packed entries) or (kind, the Bundle as read).
Prepared = tuple[str, "list[tuple[Any, ...]] | dict[str, Any]"]
_KINDS = tuple(f.name for f in fields(IndexRows) if f.name != "patients")


def _pack(e: bundles.Entry) -> tuple[Any, ...]:
    """A prepared entry as plain tuples and lists: unpickled in a third of the time the objects
    take, and unpickling is work for the one process that stores."""
    w = e.prepared
    assert w is not None
    assert w.rows is not None
    rows = w.rows
    return (e.index, e.method, e.url, e.full_url, e.request, w.res_type, w.res_id, w.last_updated, w.content,
            tuple(getattr(rows, kind) for kind in _KINDS), rows.patients)  # fmt: skip


def _unpack(packed: tuple[Any, ...]) -> bundles.Entry:
    index, method, url, full_url, request, res_type, res_id, last_updated, content, rows, patients = packed
    index_rows = IndexRows(**dict(zip(_KINDS, rows, strict=True)), patients=patients)
    write = Write(res_type, res_id, 1, last_updated, False, content, index_rows, False)
    return bundles.Entry(index, method, url, full_url, None, request, validated=True, prepared=write)


def _prepare(task: _Task, access: Access, max_entries: int) -> list[Prepared]:
    """In a worker: the task's Bundles, each as entries ``bundles.prepare_creates`` prepared, or
    (when it cannot) as the Bundle read, for ``load_bundle`` to process."""
    if task.lines is None:
        data = task.path.read_bytes()
        read = lambda: document_unit(task.path, data)  # noqa: E731
    elif task.lines:
        lines = task.lines
        read = lambda: ("transaction", ndjson_transaction(task.path, lines))  # noqa: E731
    else:
        return []
    kind, bundle = read()
    if kind == "transaction":
        try:
            entries = bundles.prepare_creates(access, bundle, max_entries)
        except FhirError as exc:
            exc.diagnostics = f"{task.path}: {exc.diagnostics}"
            raise
        if entries is not None:
            return [(kind, [_pack(e) for e in entries])]
        kind, bundle = read()  # as read: prepare_creates may have changed it before giving up
    return [(kind, bundle)]


# Prepared Bundles stored at once on PostgreSQL, each on a connection of its own: the database
# then works on one Bundle while this process sends the next (SQLite has one writer: one at a time).
STORING_AT_ONCE = 2


class _EarlierFailed(Exception):
    """The Bundle before this one failed: this one must not be committed either."""


async def _import_prepared(
    db: Database,
    settings: Settings,
    org_id: str,
    paths: list[Path],
    progress: Callable[[int], None] | None,
    workers: Preparers,
) -> ImportReport:
    """Store what the workers prepared, as ``import_paths`` without workers would.

    Two prepared Bundles may be stored at once, but they commit in file order: a Bundle waits,
    before its commit, for the one before it, and rolls back when that one failed - so the
    Bundles stored when an error stops the import are the same. A Bundle that shares an id with
    one still being stored starts after it (whether the id is taken decides match or create), and
    a Bundle that needs the database (``load_bundle``) after all before it.
    """
    report = ImportReport()
    access = Access.system(org_id)
    limit = max(settings.max_bundle_entries, 100_000)
    at_once = 1 if db.dialect == "sqlite" else STORING_AT_ONCE
    tasks = _tasks(paths)
    window: deque[tuple[_Task, Future[list[Prepared]]]] = deque()
    storing: deque[tuple[Path, asyncio.Task[list[bundles.Entry]], frozenset[tuple[str, str]]]] = deque()

    def submit() -> None:
        for task in islice(tasks, workers.ahead - len(window)):
            window.append((task, workers.pool.submit(_prepare, task, access, limit)))

    def done(entries: list[bundles.Entry]) -> None:
        _tally(report, entries)
        if progress:
            progress(len(entries))

    async def finish_first() -> None:
        path, stored, _ = storing.popleft()
        try:
            entries = await stored
        except FhirError as exc:
            exc.diagnostics = f"{path}: {exc.diagnostics}"
            raise
        done(entries)

    async def store(entries: list[bundles.Entry], after: asyncio.Task[Any] | None) -> list[bundles.Entry]:
        async with db.transaction() as conn:
            await bundles.run_prepared(ix.Ctx(conn, settings, "", access), entries)
            if after is not None:
                await asyncio.wait([after])
                if after.cancelled() or after.exception() is not None:
                    raise _EarlierFailed
        return entries

    submit()
    try:
        while window:
            task, future = window.popleft()
            try:
                prepared = await asyncio.wrap_future(future)
            except BaseException:
                while storing:  # the files before this one are stored first, and fail first
                    await finish_first()
                raise
            submit()
            report.files += task.first
            for kind, unit in prepared:
                if isinstance(unit, list):
                    entries = [_unpack(packed) for packed in unit]
                    ids = frozenset((e.prepared.res_type, e.prepared.res_id) for e in entries if e.prepared)
                    while storing and (
                        len(storing) >= at_once or any(ids & other for _, _, other in storing)
                    ):
                        await finish_first()
                    after = storing[-1][1] if storing else None
                    storing.append((task.path, asyncio.create_task(store(entries, after)), ids))
                    continue
                while storing:
                    await finish_first()
                try:
                    entries = await load_bundle(db, settings, org_id, kind, unit)
                except FhirError as exc:
                    exc.diagnostics = f"{task.path}: {exc.diagnostics}"
                    raise
                done(entries)
        while storing:
            await finish_first()
    finally:
        for _, pending in window:
            pending.cancel()
        if storing:  # after a failure: let the later Bundles roll back before the database closes
            await asyncio.wait([stored for _, stored, _ in storing])
            for _, stored, _ in storing:
                if not stored.cancelled():
                    stored.exception()  # retrieved: it is the failure reported, or follows from it
    return report


def expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix in (".json", ".ndjson"))
        else:
            out.append(p)
    return out
