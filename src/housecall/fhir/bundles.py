"""Batch and transaction Bundles (R4 http.html#transaction).

Transactions are all-or-nothing: every entry runs in the caller's one database transaction and the
first error fails the whole Bundle. Entries run in the order the spec prescribes (DELETE, POST,
PUT/PATCH, GET). ``urn:uuid:`` fullUrls are resolved to the ids the server assigns, and conditional
references (``Patient?identifier=...``) to the one resource they match.

Identity of ``urn:uuid`` entries: a POST whose fullUrl is ``urn:uuid:<uuid>`` is stored under that
uuid as its id. Posting an entry whose id is already stored is a match, as for If-None-Exist: the
stored resource is returned (200) and left as it is - a POST never changes a resource, a PUT does.
Loading the same Bundles twice therefore changes nothing; see docs/decisions/0003-urn-uuid-identity.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from housecall.access.actor import ActorKind
from housecall.access.policy import Access
from housecall.core.db import Conn
from housecall.fhir import interactions as ix
from housecall.fhir import jsonio
from housecall.fhir.errors import FhirError, bad_request
from housecall.fhir.render import resource_bytes, searchset
from housecall.fhir.store import Stored, Write, instant, version_write

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    resource: Any
    request: dict[str, Any]
    outcome: ix.Outcome | None = None
    error: FhirError | None = None
    validated: bool = False
    body: bytes | None = None
    # A plain create whose version 1 ``prepare_creates`` built and checked ahead (in a worker
    # process of the bulk loader); then ``resource`` is None.
    prepared: Write | None = None


def _parse_entries(bundle: dict[str, Any], max_entries: int) -> list[Entry]:
    raw = bundle.get("entry") or []
    if not isinstance(raw, list):
        raise bad_request("Bundle.entry must be an array", "structure", "Bundle.entry")
    if len(raw) > max_entries:
        raise FhirError(413, "too-costly", f"a Bundle may hold at most {max_entries} entries, not {len(raw)}")
    entries = []
    for n, e in enumerate(raw):
        where = f"Bundle.entry[{n}]"
        if not isinstance(e, dict):
            raise bad_request(f"{where} must be an object", "structure", where)
        request = e.get("request")
        if (
            not isinstance(request, dict)
            or not isinstance(request.get("method"), str)
            or not isinstance(request.get("url"), str)
        ):
            raise bad_request(f"{where}.request needs a method and a url", "required", f"{where}.request")
        method = request["method"].upper()
        if method not in ORDER:
            raise bad_request(f"{where}.request.method '{method}' is not supported", "not-supported")
        entries.append(
            Entry(n, method, request["url"].lstrip("/"), e.get("fullUrl"), e.get("resource"), request)
        )
    return entries


def _split_url(url: str, base_url: str) -> tuple[list[str], str]:
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    if not (":" in url or "?" in url or "#" in url or url.startswith("//")):
        return [p for p in url.split("/") if p], ""  # a plain path, as urlsplit would read it
    parts = urlsplit(url)
    return [p for p in parts.path.split("/") if p], parts.query


def _walk_references(node: Any, fix: Callable[[str], str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                node[key] = fix(value)
            elif isinstance(value, dict | list):
                _walk_references(value, fix)
    elif isinstance(node, list):
        for item in node:
            _walk_references(item, fix)


async def _resolve_identities(ctx: ix.Ctx, entries: list[Entry], ids: dict[str, str]) -> None:
    """Give each POST its id (its urn:uuid, or a fresh one) and each PUT its target, up front,
    so that references between entries can be rewritten before anything is stored."""
    for e in entries:
        path, query = _split_url(e.url, ctx.base_url)
        if e.method == "POST" and len(path) == 1:
            ix.check_type(path[0])
            if e.request.get("ifNoneExist"):
                found = await ix.find_by_criteria(ctx, path[0], e.request["ifNoneExist"])
                if len(found) > 1:
                    raise FhirError(
                        412, "multiple-matches", f"entry {e.index}: ifNoneExist matched {len(found)}"
                    )
                if found:
                    e.outcome = ix.Outcome(200, found[0])
                    if e.full_url:
                        ids[e.full_url] = f"{path[0]}/{found[0].res_id}"
                    continue
            res_id = _uuid_identity(e.full_url) or ix.new_id()
            e.request = {**e.request, "_id": res_id}
            if e.full_url:
                ids[e.full_url] = f"{path[0]}/{res_id}"
        elif e.method in ("PUT", "PATCH") and e.full_url:
            if len(path) == 2:
                ids[e.full_url] = f"{path[0]}/{path[1]}"
            elif len(path) == 1 and query:
                found = await ix.find_by_criteria(ctx, path[0], query)
                if len(found) > 1:
                    raise FhirError(
                        412, "multiple-matches", f"entry {e.index}: conditional update matched {len(found)}"
                    )
                target = (
                    found[0].res_id
                    if found
                    else ((e.resource or {}).get("id") if isinstance(e.resource, dict) else None)
                    or ix.new_id()
                )
                ids[e.full_url] = f"{path[0]}/{target}"


def _uuid_identity(full_url: str | None) -> str | None:
    if full_url and full_url.startswith("urn:uuid:"):
        candidate = full_url[len("urn:uuid:") :].lower()
        if 1 <= len(candidate) <= 64 and set(candidate) <= ix.ID_CHARS:
            return candidate
    return None


def _is_conditional(ref: str) -> bool:
    """A conditional reference (``Patient?identifier=…``): the database resolves it."""
    return "?" in ref and "/" not in ref.split("?", 1)[0]


def _no_such_entry(e: Entry, ref: str) -> FhirError:
    return bad_request(f"entry {e.index}: reference {ref} matches no fullUrl in the Bundle", "not-found")


async def _rewrite_references(
    ctx: ix.Ctx, entries: list[Entry], ids: dict[str, str], *, batch_urls: set[str] | None = None
) -> None:
    """Rewrite references to entries (``ids``) and conditional references. In a batch
    (``batch_urls``: its fullUrls) a reference to another entry is an error and any other
    ``urn:uuid`` is left as written, as it would be outside a Bundle."""
    await _resolve_conditional(ctx, _rewrite_local(entries, ids, batch_urls))


def _rewrite_local(
    entries: list[Entry], ids: dict[str, str], batch_urls: set[str] | None = None
) -> list[tuple[Entry, list[str]]]:
    """The part of ``_rewrite_references`` that needs no database: references to entries are
    rewritten; returned are the entries holding conditional references, with those references."""
    conditional: list[tuple[Entry, list[str]]] = []
    for e in entries:
        if isinstance(e.resource, dict):
            pending: list[str] = []

            def fix(ref: str, pending: list[str] = pending, e: Entry = e) -> str:
                if ref in ids:
                    return ids[ref]
                if batch_urls is not None:
                    if ref in batch_urls:
                        raise bad_request(
                            f"entry {e.index}: reference {ref}: the entries of a batch cannot refer to "
                            "each other (use a transaction)",
                            "invalid",
                        )
                elif ref.startswith("urn:uuid:"):
                    raise _no_such_entry(e, ref)
                if _is_conditional(ref):
                    pending.append(ref)
                return ref

            _walk_references(e.resource, fix)
            if pending:
                conditional.append((e, pending))
    return conditional


async def _resolve_conditional(ctx: ix.Ctx, conditional: list[tuple[Entry, list[str]]]) -> None:
    """Rewrite each conditional reference (``Patient?identifier=…``) to the one resource it matches."""
    resolved: dict[str, str] = {}
    for e, pending in conditional:
        for ref in pending:
            if ref not in resolved:
                res_type, criteria = ref.split("?", 1)
                ix.check_type(res_type)
                found = await ix.find_by_criteria(ctx, res_type, criteria)
                if len(found) != 1:
                    raise FhirError(
                        412, "multiple-matches" if found else "not-found",
                        f"entry {e.index}: conditional reference {ref} matched {len(found)} resources",
                    )  # fmt: skip
                resolved[ref] = f"{res_type}/{found[0].res_id}"
        _walk_references(e.resource, lambda r: resolved.get(r, r))


def _keys(posts: list[Entry]) -> list[tuple[str, str]]:
    return [(e.url.split("?")[0].split("/")[-1], e.request["_id"]) for e in posts]


async def _store_posts(
    ctx: ix.Ctx,
    posts: list[Entry],
    chunk: int = 0,
    *,
    each_alone: bool = False,
    meanwhile: Callable[[], None] | None = None,
    probed: list[Stored] | None = None,
) -> None:
    """Validate and store plain creates together (one write per chunk instead of one per entry).
    ``each_alone`` (a batch): an entry that is invalid or not allowed gets its error and the others
    go on; otherwise (a transaction) the first such error ends everything. ``meanwhile`` runs once
    every entry has its outcome, while the database stores the chunk before the last; it means
    that nothing follows the creates in the unit of work (the last chunk is planned with
    ``last``). ``probed``: what is already stored under the posts' ids, when the caller asked."""
    if probed is None:
        probed = await ctx.store.fetch_keys(_keys(posts))
    existing = {(s.res_type, s.res_id): s for s in probed}
    # Pipelined: while the database stores one chunk, the next is validated and indexed. Both
    # happen inside the caller's one transaction, so a failure anywhere still stores nothing.
    pending: asyncio.Task[None] | None = None
    try:
        bounds = list(_chunks(len(posts), chunk))
        for n, (start, end) in enumerate(bounds):
            writes = _prepare_posts(ctx, posts[start:end], existing, each_alone)
            last = n == len(bounds) - 1
            if last and meanwhile is not None:
                # Every outcome is known: what only reads them is built while the database still
                # stores the chunk before, and the last chunk waits to go out with what the caller
                # writes alongside it (the audit event) in one statement.
                meanwhile()
            # The chunk's statement is built while the one before runs.
            send = ctx.store.plan(writes, last=last and meanwhile is not None)
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(send())
            await asyncio.sleep(0)  # let the chunk's statement go out before preparing the next
        if meanwhile is not None and not bounds:
            meanwhile()
        if pending is not None:
            await pending
    except BaseException:
        # Let a statement in flight finish (cancelling it mid-protocol would leave the connection
        # unusable for the ROLLBACK that follows); its result is discarded with the transaction.
        if pending is not None and not pending.done():
            with contextlib.suppress(Exception):
                await pending
        raise


def _chunks(n: int, size: int = 0) -> Iterator[tuple[int, int]]:
    """Bounds of the chunks of ``n`` creates: ``size`` each, or by default small at first so that
    the database starts storing early, then growing (it stores a chunk in about twice the time it
    takes to prepare one, so a chunk three times the last is ready before the database is free):
    10, 30, 60 for a Bundle of 100, which stores 1.15x as fast as in two chunks of 50."""
    at = 0
    step = size or FIRST_CHUNK
    while at < n:
        yield at, min(at + step, n)
        at += step
        if not size:
            step = min(step * 3, MAX_CHUNK)


FIRST_CHUNK = 10
MAX_CHUNK = 100


def _prepare_posts(
    ctx: ix.Ctx, posts: list[Entry], existing: dict[tuple[str, str], Stored], each_alone: bool = False
) -> list[Write]:
    writes: list[Write] = []
    for e in posts:
        if not each_alone:
            _prepare_post(ctx, e, existing, writes)
            continue
        try:
            _prepare_post(ctx, e, existing, writes)
        except FhirError as exc:
            e.error = exc
    return writes


def _prepare_post(
    ctx: ix.Ctx, e: Entry, existing: dict[tuple[str, str], Stored], writes: list[Write]
) -> None:
    """Validate one plain create: its outcome set, its write (if any) appended to ``writes``."""
    res_type = e.url.split("?")[0].split("/")[-1]
    res_id = e.request["_id"]
    found = existing.get((res_type, res_id))
    if e.prepared is not None and found is None:
        w = e.prepared
        patients = ix.write_patients(w)
        ctx.saw(w.stored(), patients)
        e.outcome = ix.Outcome(201, w.stored())
        writes.append(w)
        return
    if e.prepared is not None and e.prepared.content is not None:
        resource = jsonio.loads(e.prepared.content)  # the id is taken: a new version, or a match
    else:
        resource = e.resource if e.validated else ix.validate(e.resource, res_type)
    if found is not None and not found.deleted:
        # Already stored under this identity: a match, as for If-None-Exist - the POST never
        # changes it (a PUT does), so loading the same Bundles again is a no-op.
        if not ctx.visible(found):
            raise ix.not_found(res_type, res_id)
        ctx.saw(found)
        e.outcome = ix.Outcome(200, found)
        return
    if found is not None:  # deleted since: created again, as a new version of the same id
        w = version_write(resource, res_id, found.version + 1, replace=True)
    else:
        w = version_write(resource, res_id, 1, replace=False)
    patients = ix.write_patients(w)
    ctx.access.check_write("create", res_type, res_id, resource, None, patients)
    ctx.saw(w.stored(), patients)
    e.outcome = ix.Outcome(201, w.stored())
    writes.append(w)


async def run_entry(ctx: ix.Ctx, e: Entry) -> ix.Outcome:
    path, query = _split_url(e.url, ctx.base_url)
    if not path:
        raise bad_request(f"entry {e.index}: request.url '{e.url}' names no resource type")
    res_type = path[0]
    if e.method == "POST":
        if len(path) != 1:
            raise bad_request(f"entry {e.index}: POST url must be a resource type")
        return await ix.create(ctx, res_type, e.resource, if_none_exist=e.request.get("ifNoneExist"),
                               res_id=e.request.get("_id"))  # fmt: skip
    if e.method == "PUT":
        if len(path) == 2:
            return await ix.update(ctx, res_type, path[1], e.resource, if_match=e.request.get("ifMatch"))
        return await ix.conditional_update(
            ctx, res_type, query, e.resource, if_match=e.request.get("ifMatch")
        )
    if e.method == "PATCH":
        if len(path) != 2:
            raise bad_request(f"entry {e.index}: PATCH needs Type/id")
        body = e.resource
        if isinstance(body, dict) and body.get("resourceType") == "Binary" and body.get("data"):
            import base64

            body = jsonio.loads(base64.b64decode(body["data"]))
        return await ix.patch(ctx, res_type, path[1], body, "application/json-patch+json")
    if e.method == "DELETE":
        if len(path) == 2:
            return await ix.delete(ctx, res_type, path[1], if_match=e.request.get("ifMatch"))
        return await ix.conditional_delete(ctx, res_type, query)
    # GET / HEAD
    if len(path) == 2:
        out = await ix.read(ctx, res_type, path[1])
        if (
            e.request.get("ifNoneMatch")
            and out.stored
            and (ix.parse_version_header(e.request["ifNoneMatch"]) == out.stored.version)
        ):
            return ix.Outcome(304, out.stored)
        return out
    if len(path) == 4 and path[2] == "_history":
        return await ix.vread(ctx, res_type, path[1], path[3])
    if len(path) == 1:
        req = ix.search_request(ctx, res_type, parse_qsl(query, keep_blank_values=True))
        result = await ix.search(ctx, req)
        return ix.Outcome(200, body=searchset(ctx.base_url, req, result))
    raise bad_request(f"entry {e.index}: unsupported request url '{e.url}'")


def _response_entry(e: Entry, base_url: str, representation: bool) -> bytes:
    if e.error is not None:
        return jsonio.dumps({"response": {"status": str(e.error.status), "outcome": e.error.outcome()}})
    out = e.outcome
    assert out is not None
    status = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}.get(
        out.status, str(out.status)
    )
    response: dict[str, Any] = {"status": status}
    item = b"{"
    if out.stored is not None:
        s = out.stored
        response["etag"] = s.etag
        response["lastModified"] = instant(s.last_updated)
        if out.status in (200, 201) and e.method in ("POST", "PUT", "PATCH"):
            response["location"] = f"{s.res_type}/{s.res_id}/_history/{s.version}"
        item += b'"fullUrl":"' + f"{base_url}/{s.res_type}/{s.res_id}".encode() + b'",'
        if (representation or e.method == "GET") and s.content is not None and out.status != 304:
            item += b'"resource":' + resource_bytes(s) + b","
    elif out.body is not None:
        item += b'"resource":' + (out.body if isinstance(out.body, bytes) else jsonio.dumps(out.body)) + b","
    return item + b'"response":' + jsonio.dumps(response) + b"}"


def _bundle(kind: str, entries: list[Entry], base_url: str, representation: bool) -> bytes:
    body = [_response_entry(e, base_url, representation) for e in sorted(entries, key=lambda x: x.index)]
    return b'{"resourceType":"Bundle","type":"' + kind.encode() + b'","entry":[' + b",".join(body) + b"]}"


# Called with the entries once all have their outcomes, while the database may still be storing
# the last chunk of creates: what only reads the outcomes (the response Bundle, the audit event) is
# built then instead of after.
OutcomesKnown = Callable[[list[Entry]], None]


class _Response:
    """A response Bundle, built as soon as every entry has its outcome (``ready``), then ``also``."""

    def __init__(
        self, kind: str, base_url: str, representation: bool, also: Callable[[], None] | None
    ) -> None:
        self.kind, self.base_url, self.representation, self.also = kind, base_url, representation, also
        self.body: bytes | None = None

    def ready(self, entries: list[Entry]) -> None:
        self.body = _bundle(self.kind, entries, self.base_url, self.representation)
        if self.also is not None:
            self.also()

    def of(self, entries: list[Entry]) -> bytes:
        if self.body is None:
            self.ready(entries)
        assert self.body is not None
        return self.body


async def transaction(
    ctx: ix.Ctx,
    bundle: dict[str, Any],
    *,
    representation: bool = False,
    outcomes_known: Callable[[], None] | None = None,
) -> bytes:
    """The transaction-response Bundle; ``outcomes_known`` as for ``run_transaction``."""
    response = _Response("transaction-response", ctx.base_url, representation, outcomes_known)
    return response.of(await run_transaction(ctx, bundle, response.ready))


async def run_transaction(
    ctx: ix.Ctx, bundle: dict[str, Any], outcomes_known: OutcomesKnown | None = None
) -> list[Entry]:
    """All entries or none, in the caller's transaction; the entries carry their outcomes.
    ``outcomes_known`` is called while the last creates are stored when nothing follows them."""
    entries = _parse_entries(bundle, ctx.settings.max_bundle_entries)
    ids: dict[str, str] = {}
    await _resolve_identities(ctx, entries, ids)
    ordered = sorted(entries, key=lambda x: (ORDER[x.method], x.index))
    # Plain creates got their id in _resolve_identities; any other POST (an operation such as
    # ValueSet/$lookup) goes through run_entry, which refuses it with a 400 naming the entry.
    plain_posts = [e for e in ordered if e.method == "POST" and e.outcome is None and "_id" in e.request]
    probed = None
    if plain_posts and not any(e.method == "DELETE" for e in entries):
        # Which of the creates' ids are taken is asked while the references are rewritten (the
        # database and Python side by side); a DELETE first would change the answer.
        probe = asyncio.ensure_future(ctx.store.fetch_keys(_keys(plain_posts)))
        await asyncio.sleep(0)  # the statement goes out
        try:
            conditional = _rewrite_local(entries, ids)
        finally:
            probed = await probe
        await _resolve_conditional(ctx, conditional)
    else:
        await _rewrite_references(ctx, entries, ids)
    current: Entry | None = None
    try:
        for e in ordered:
            if e.method == "DELETE":
                current = e
                e.outcome = await run_entry(ctx, e)
        current = None
        meanwhile = None
        posted = {id(e) for e in plain_posts}
        if outcomes_known is not None and all(e.outcome is not None or id(e) in posted for e in ordered):
            meanwhile = partial(outcomes_known, entries)  # nothing follows the creates
        await _store_posts(ctx, plain_posts, meanwhile=meanwhile, probed=probed)
        for e in ordered:
            if e.outcome is None:
                current = e
                e.outcome = await run_entry(ctx, e)
    except FhirError as exc:
        if current is None:  # a plain create failed validation
            current = next((e for e in plain_posts if e.outcome is None), None)
        where = f" (entry {current.index})" if current is not None else ""
        exc.diagnostics = f"transaction failed{where}: {exc.diagnostics}"
        raise
    return entries


TransactionFactory = Callable[[], AbstractAsyncContextManager[Conn]]


async def batch(
    make_ctx: Callable[[Conn], ix.Ctx],
    transaction_scope: TransactionFactory,
    bundle: dict[str, Any],
    max_entries: int,
    *,
    representation: bool = False,
    base_url: str = "",
    closing_scope: TransactionFactory | None = None,
    outcomes_known: Callable[[], None] | None = None,
) -> bytes:
    """The batch-response Bundle; ``outcomes_known`` as for ``run_batch``."""
    response = _Response("batch-response", base_url, representation, outcomes_known)
    entries = await run_batch(
        make_ctx, transaction_scope, bundle, max_entries, base_url=base_url, closing_scope=closing_scope,
        outcomes_known=response.ready,
    )  # fmt: skip
    return response.of(entries)


async def run_batch(
    make_ctx: Callable[[Conn], ix.Ctx],
    transaction_scope: TransactionFactory,
    bundle: dict[str, Any],
    max_entries: int,
    *,
    base_url: str = "",
    closing_scope: TransactionFactory | None = None,
    outcomes_known: OutcomesKnown | None = None,
) -> list[Entry]:
    """Each entry succeeds or fails on its own; plain creates share one database transaction,
    validated chunk by chunk while the database stores the chunk before. The last transaction
    opens with ``closing_scope`` when given (the API's, which commits the request's audit event
    with it). ``outcomes_known`` is called while the creates are stored when nothing follows them."""
    entries = _parse_entries(bundle, max_entries)
    ordered = sorted(entries, key=lambda x: (ORDER[x.method], x.index))
    posts: list[Entry] = []
    for e in ordered:
        path, _query = _split_url(e.url, base_url)
        if e.method == "POST" and len(path) == 1 and not e.request.get("ifNoneExist"):
            try:
                ix.check_type(path[0])
            except FhirError as exc:
                e.error = exc
                continue
            e.request = {**e.request, "_id": _uuid_identity(e.full_url) or ix.new_id()}
            posts.append(e)
    # References are resolved entry by entry, as if each entry were its own request: a conditional
    # reference to the one resource it matches, and a reference to another entry is that entry's error
    # (stored as written, both would dangle).
    full_urls = {e.full_url for e in entries if e.full_url}
    posted = {id(e) for e in posts}
    units = ([posts] if posts else []) + [[e] for e in ordered if id(e) not in posted and e.error is None]
    for n, unit in enumerate(units):
        scope = closing_scope if closing_scope is not None and n == len(units) - 1 else transaction_scope
        try:
            async with scope() as conn:
                ctx = make_ctx(conn)
                ready = []
                for e in unit:
                    try:
                        await _rewrite_references(ctx, [e], {}, batch_urls=full_urls)
                        ready.append(e)
                    except FhirError as exc:
                        if unit is not posts:
                            raise
                        e.error = exc
                if unit is posts:
                    last = n == len(units) - 1 and outcomes_known is not None
                    meanwhile = partial(outcomes_known, entries) if outcomes_known and last else None
                    await _store_posts(ctx, ready, each_alone=True, meanwhile=meanwhile)
                else:
                    unit[0].outcome = await run_entry(ctx, unit[0])
        except FhirError as exc:
            if unit is posts:
                raise
            unit[0].error = exc
    return entries


# -- transactions prepared ahead (the bulk loader's worker processes) --------------------------------


class _NeedsDatabase(Exception):
    """The Bundle holds a conditional reference: only the database can resolve it."""


def prepare_creates(access: Access, bundle: dict[str, Any], max_entries: int) -> list[Entry] | None:
    """Do ahead, without the database, what ``run_transaction`` does for a transaction of plain
    creates made by Housecall itself: ids, references between entries, validation, the write
    check, and version 1 serialized and indexed (``Entry.prepared``); the same errors, in the same
    order. ``run_prepared`` stores the entries later, maybe in another process: whether an id is
    taken is decided there, and for Housecall itself nothing else depends on what is stored.

    None when that is not so (another actor, another method, a conditional create or reference):
    ``run_transaction`` does all of it then, on the Bundle as read - this one may have been changed.
    """
    if access.actor.kind is not ActorKind.SYSTEM:
        return None
    entries = _parse_entries(bundle, max_entries)
    types: list[str] = []
    for e in entries:
        path, _query = _split_url(e.url, "")
        if e.method != "POST" or len(path) != 1 or e.request.get("ifNoneExist"):
            return None
        types.append(path[0])
    ids: dict[str, str] = {}
    for e, res_type in zip(entries, types, strict=True):
        ix.check_type(res_type)
        res_id = _uuid_identity(e.full_url) or ix.new_id()
        e.request = {**e.request, "_id": res_id}
        if e.full_url:
            ids[e.full_url] = f"{res_type}/{res_id}"
    for e in entries:
        if isinstance(e.resource, dict):

            def fix(ref: str, e: Entry = e) -> str:
                if ref in ids:
                    return ids[ref]
                if ref.startswith("urn:uuid:"):
                    raise _no_such_entry(e, ref)
                if _is_conditional(ref):
                    raise _NeedsDatabase
                return ref

            try:
                _walk_references(e.resource, fix)
            except _NeedsDatabase:
                return None
    for e, res_type in zip(entries, types, strict=True):
        try:
            resource = ix.validate(e.resource, res_type)
            w = version_write(resource, e.request["_id"], 1, replace=False)
            access.check_write("create", res_type, w.res_id, resource, None, ix.write_patients(w))
        except FhirError as exc:
            exc.diagnostics = f"transaction failed (entry {e.index}): {exc.diagnostics}"
            raise
        e.prepared = w
        e.resource = None
        e.validated = True
    return entries


# Prepared entries leave nothing to do while a chunk is stored: fewer, larger statements (each
# COPY costs a round trip and the server's setup; 50-entry chunks made the store ~20% slower).
PREPARED_CHUNK = 2000


async def run_prepared(ctx: ix.Ctx, entries: list[Entry]) -> list[Entry]:
    """Store a transaction ``prepare_creates`` prepared, in the caller's transaction, as
    ``run_transaction`` would: an id already stored is a match (200), any other a create (201)."""
    try:
        await _store_posts(ctx, entries, PREPARED_CHUNK)
    except FhirError as exc:
        current = next((e for e in entries if e.outcome is None), None)
        where = f" (entry {current.index})" if current is not None else ""
        exc.diagnostics = f"transaction failed{where}: {exc.diagnostics}"
        raise
    return entries
