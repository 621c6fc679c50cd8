"""The pages' door to the resource store: the FHIR interactions, the access path and the audit
trail, exactly as the API uses them, for the person signed in to the page.

Portal and workspace pages never query resource tables themselves. They open ``reading(request)``
or ``writing(request)`` and call ``read``, ``search``, ``create`` and ``update``; each call goes
through ``fhir/interactions.py`` with the actor's ``Access`` (so a page shows exactly what the same
person would get from ``/fhir``) and leaves a BALP AuditEvent once the block has ended (a write's
events after its commit; a refused or failed call's too)::

    async with records.reading(request) as rec:
        reports = await rec.search("DiagnosticReport", [("patient", pid), ("_sort", "-date")])
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from housecall.access.actor import Actor
from housecall.access.policy import Access
from housecall.audit.events import AuditEntry, AuditRequest, Outcome, entries_for_touched
from housecall.audit.trail import sink_for
from housecall.core.db import Conn, Database
from housecall.fhir import interactions as ix
from housecall.fhir.api import base_url
from housecall.fhir.errors import FhirError
from housecall.identity import sessions

Query = Sequence[tuple[str, str]]


@dataclass
class Page:
    """One page of search results, parsed; ``included`` holds ``_include``/``_revinclude`` hits
    keyed by ``Type/id``."""

    resources: list[dict[str, Any]]
    included: dict[str, dict[str, Any]]
    total: int | None
    has_more: bool

    def __iter__(self) -> Any:
        return iter(self.resources)

    def __len__(self) -> int:
        return len(self.resources)


@dataclass
class Records:
    """One page request's view of the store, as one actor (build with ``reading``/``writing``)."""

    ctx: ix.Ctx
    address: str | None = None
    entries: list[AuditEntry] = field(default_factory=list)

    @property
    def actor(self) -> Actor:
        return self.ctx.actor

    @property
    def conn(self) -> Conn:
        return self.ctx.conn

    def _audit(self, what: AuditRequest, outcome: Outcome) -> None:
        ctx = self.ctx
        self.entries += entries_for_touched(self.actor, what, outcome, ctx.touched, ctx.refs)
        ctx.touched.clear()
        ctx.refs.clear()

    async def _run(self, what: AuditRequest, call: Any) -> Any:
        try:
            result = await call
        except FhirError as exc:
            self._audit(what, Outcome.MINOR_FAILURE if exc.status < 500 else Outcome.SERIOUS_FAILURE)
            raise
        except Exception:
            self._audit(what, Outcome.SERIOUS_FAILURE)
            raise
        self._audit(what, Outcome.SUCCESS)
        return result

    def on_behalf(self, patient_id: str | None = None) -> Records:
        """Housecall's own access on this transaction, for what a person may not do on the API
        (open a Task in the care team's inbox, write the visit's Encounter, store a Binary) once
        the page has checked, with the person's own access, that the work is theirs. Its audit
        events name the person and are stored with this block's; ``patient_id`` files them in
        that patient's record when what is touched is in no compartment (a Binary)."""
        ctx = self.ctx
        system = ix.Ctx(ctx.conn, ctx.settings, ctx.base_url, Access.system(self.actor.org_id))
        return _OnBehalf(system, self.address, self.entries, person=self.actor, patient_id=patient_id)

    # -- reads --------------------------------------------------------------------------------------

    async def read(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        """The current version, or None when it is unknown, deleted or not the actor's to see
        (the same answer in all three cases, as on the API)."""
        try:
            out = await self._run(
                AuditRequest("read", res_type, res_id, address=self.address),
                ix.read(self.ctx, res_type, res_id),
            )
        except FhirError as exc:
            if exc.status in (404, 410):
                return None
            raise
        return out.stored.resource()  # type: ignore[no-any-return]

    async def read_versioned(self, res_type: str, res_id: str) -> tuple[dict[str, Any], int] | None:
        """The current version and its version number (for ``update(..., version=)``), or None."""
        try:
            out = await self._run(
                AuditRequest("read", res_type, res_id, address=self.address),
                ix.read(self.ctx, res_type, res_id),
            )
        except FhirError as exc:
            if exc.status in (404, 410):
                return None
            raise
        return out.stored.resource(), out.stored.version

    async def search(self, res_type: str, query: Query = ()) -> Page:
        """A FHIR search (the same parameters as ``GET /fhir/{type}?…``), confined to what the
        actor may see. Unknown parameters are errors here: a page's query is code, not input."""
        query = list(query)
        ctx = self.ctx
        strict, ctx.strict = ctx.strict, True
        try:
            req = ix.search_request(ctx, res_type, query)
            result = await self._run(
                AuditRequest("search-type", res_type, query=query, address=self.address), ix.search(ctx, req)
            )
        finally:
            ctx.strict = strict
        included = {}
        for stored in result.included:
            included[f"{stored.res_type}/{stored.res_id}"] = stored.resource()
        return Page([s.resource() for s in result.matches], included, result.total, result.has_more)

    # -- writes -------------------------------------------------------------------------------------

    async def create(self, res_type: str, resource: dict[str, Any]) -> dict[str, Any]:
        """Validate and store a new resource (server-assigned id); returns it with id and meta."""
        out = await self._run(
            AuditRequest("create", res_type, address=self.address), ix.create(self.ctx, res_type, resource)
        )
        return out.stored.resource()  # type: ignore[no-any-return]

    async def update(self, resource: dict[str, Any], *, version: int | None = None) -> dict[str, Any]:
        """Store a new version; with ``version`` only if that is still the current one (else a 412
        ``FhirError``: someone else changed it since the page read it)."""
        res_type, res_id = resource["resourceType"], resource["id"]
        out = await self._run(
            AuditRequest("update", res_type, res_id, address=self.address),
            ix.update(
                self.ctx, res_type, res_id, resource, if_match=None if version is None else f'W/"{version}"'
            ),
        )
        return out.stored.resource()  # type: ignore[no-any-return]


@dataclass
class _OnBehalf(Records):
    """``Records.on_behalf``: system access whose audit events name the person."""

    person: Actor | None = None
    patient_id: str | None = None

    @property
    def actor(self) -> Actor:
        return self.person or self.ctx.actor

    def _audit(self, what: AuditRequest, outcome: Outcome) -> None:
        if self.patient_id:
            self.ctx.touched[self.patient_id] = None
        super()._audit(what, outcome)


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def page_actor(request: Request) -> Actor:
    """The signed-in person's actor; otherwise a redirect to sign-in (raised)."""
    await sessions.require_signed_in(request)
    actor = await sessions.actor_for_request(request)
    assert actor is not None  # a full session always has one
    return actor


@asynccontextmanager
async def _records(request: Request, actor: Actor | None, write: bool) -> AsyncIterator[Records]:
    actor = actor or await page_actor(request)
    db = _db(request)
    rec: Records | None = None
    try:
        async with db.transaction() if write else db.reader() as conn:
            access = await Access.load(conn, actor)
            ctx = ix.Ctx(conn, request.app.state.settings, base_url(request), access)
            rec = Records(ctx, request.client.host if request.client else None)
            yield rec
    finally:
        if rec is not None and rec.entries:
            await sink_for(request.app.state).record(rec.entries)


def reading(request: Request, actor: Actor | None = None) -> Any:
    """``async with reading(request) as rec``: reads and searches as the signed-in person."""
    return _records(request, actor, write=False)


def writing(request: Request, actor: Actor | None = None) -> Any:
    """``async with writing(request) as rec``: one transaction; it commits when the block ends
    without an exception, and its audit events are stored after that."""
    return _records(request, actor, write=True)
