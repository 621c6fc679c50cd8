"""The FHIR R4 REST API at ``/fhir`` (R4 http.html).

Routes are thin: they parse HTTP (headers, Prefer, body limits), open the unit of work, call an
interaction and render. Every write commits before its response is built, so an answered 201 is
durable. Every failure is an OperationOutcome with the right status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.routing import Route

from housecall.access.actor import Actor, ActorKind
from housecall.access.policy import Access
from housecall.audit.events import AuditEntry, AuditRef, AuditRequest, Outcome, entries_for_touched
from housecall.audit.trail import append, sink_for
from housecall.core.db import Conn, Database, DatabaseUnavailable
from housecall.core.instants import http_date
from housecall.core.settings import Settings
from housecall.fhir import bundles, jsonio
from housecall.fhir import interactions as ix
from housecall.fhir.capability import capability_statement
from housecall.fhir.errors import FhirError, OutcomeIssue, bad_request, operation_outcome
from housecall.fhir.operations import everything, validate_op
from housecall.fhir.render import history_bundle, resource_bytes, searchset
from housecall.fhir.store import Stored
from housecall.identity.sessions import actor_for_request
from housecall.smart.tokens import actor_for_token

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"


def fhir_response(
    body: bytes | dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    if isinstance(body, dict):
        body = jsonio.dumps(body)
    return Response(body or b"", status_code=status, headers=headers, media_type=FHIR_JSON if body else None)


def error_response(exc: FhirError) -> Response:
    return fhir_response(exc.outcome(), exc.status, exc.headers or None)


def base_url(request: Request) -> str:
    """The FHIR base as the client addressed it, honouring RFC 7239 ``Forwarded`` and ``X-Forwarded-*``."""
    cached: str | None = request.scope.get("housecall.base_url")
    if cached is None:
        cached = request.scope["housecall.base_url"] = _base_url(request)
    return cached


def _base_url(request: Request) -> str:
    h = request.headers
    proto = host = None
    forwarded = h.get("forwarded")
    if forwarded:
        for pair in forwarded.split(",")[0].split(";"):
            key, _, value = pair.strip().partition("=")
            value = value.strip('"')
            if key.lower() == "proto":
                proto = value
            elif key.lower() == "host":
                host = value
    proto = (
        proto or h.get("x-forwarded-proto", "").split(",")[0].strip() or request.scope.get("scheme", "http")
    )
    host = host or h.get("x-forwarded-host", "").split(",")[0].strip() or h.get("host") or request.url.netloc
    prefix = h.get("x-forwarded-prefix", "").rstrip("/")
    return f"{proto}://{host}{prefix}/fhir"


def prefer(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(","):
        for token in part.split(";"):
            key, _, value = token.strip().partition("=")
            if key:
                out[key.lower()] = value.strip('"').lower()
    return out


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _ctx(request: Request, conn: Conn) -> ix.Ctx:
    """The interactions' context for this request: its access (loaded once, in ``_route``) and
    the audit notes every context of the request adds to."""
    trail: _Trail = request.state.fhir_trail
    return ix.Ctx(
        conn, _settings(request), base_url(request), request.state.fhir_access,
        strict=prefer(request).get("handling") == "strict", touched=trail.touched, refs=trail.refs,
    )  # fmt: skip


async def _body(request: Request) -> bytes:
    limit = _settings(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError(413, "too-costly", f"the body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError(413, "too-costly", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(request: Request) -> str:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and not (ctype.endswith("json") or ctype == "application/x-www-form-urlencoded"):
        raise FhirError(
            415, "not-supported", f"content type '{ctype}' is not supported; send application/fhir+json"
        )
    return ctype


def _version_headers(request: Request, stored: Stored, with_location: bool) -> dict[str, str]:
    headers = {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated // 1_000_000)}
    if with_location:
        headers["Location"] = (
            f"{base_url(request)}/{stored.res_type}/{stored.res_id}/_history/{stored.version}"
        )
    return headers


def _write_response(request: Request, out: ix.Outcome) -> Response:
    if out.stored is None:
        return fhir_response(None, out.status, out.headers or None)
    headers = _version_headers(request, out.stored, with_location=True)
    wanted = prefer(request).get("return", "representation")
    if wanted == "minimal" or out.stored.content is None:
        return fhir_response(None, out.status, headers)
    if wanted == "operationoutcome":
        oo = operation_outcome([OutcomeIssue("informational", f"{out.stored.res_type}/{out.stored.res_id} stored",
                                             "information")])  # fmt: skip
        return fhir_response(oo, out.status, headers)
    return fhir_response(out.stored.content, out.status, headers)


# -- whole system --------------------------------------------------------------------------------


async def metadata(request: Request) -> Response:
    # Public: the CapabilityStatement describes the server, never data.
    extra = getattr(request.app.state, "capability_extra", b"")
    return fhir_response(capability_statement(base_url(request), extra))


async def system_bundle(request: Request) -> Response:
    _check_content_type(request)
    bundle = ix.parse_json(await _body(request))
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the base takes a Bundle of type batch or transaction", "structure")
    kind = bundle.get("type")
    representation = prefer(request).get("return") == "representation"
    db = _db(request)
    trail: _Trail = request.state.fhir_trail
    if kind == "transaction":
        async with _writing(request) as conn:
            body = await bundles.transaction(
                _ctx(request, conn), bundle, representation=representation, outcomes_known=trail.prepare
            )
        return fhir_response(body)
    if kind == "batch":
        body = await bundles.batch(
            lambda conn: _ctx(request, conn), db.transaction, bundle, _settings(request).max_bundle_entries,
            representation=representation, base_url=base_url(request),
            closing_scope=lambda: _writing(request), outcomes_known=trail.prepare,
        )  # fmt: skip
        return fhir_response(body)
    raise bad_request(
        f"Bundle.type must be batch or transaction to be processed, not '{kind}'", "value", "Bundle.type"
    )


async def _history(request: Request, res_type: str | None, res_id: str | None, path: str) -> Response:
    query = list(request.query_params.multi_items())
    params = dict(query)
    settings = _settings(request)
    count_text = params.get("_count", str(settings.default_count))
    if not count_text.isdigit() or int(count_text) > settings.max_count:
        raise bad_request(f"_count must be an integer from 0 to {settings.max_count}")
    offset_text = params.get("_offset", "0")
    if not offset_text.isdigit():
        raise bad_request("_offset must be a non-negative integer")
    count, offset = int(count_text), int(offset_text)
    since = None
    if "_since" in params:
        from housecall.fhir.indexing import date_bounds

        try:
            since = date_bounds(params["_since"])[0]
        except ValueError:
            raise bad_request(f"_since '{params['_since']}' is not an instant", "value") from None
    if res_type:
        ix.check_type(res_type)
    async with _reader(request) as conn:
        ctx = _ctx(request, conn)
        # An instance's history may be another organization's resource granted by Consent; a type's
        # or the system's is the actor's organization's alone.
        store = ctx.reader if res_id is not None else ctx.store
        if res_id is not None:
            assert res_type is not None
            current = await store.read(res_type, res_id)
            if current is None or not ctx.visible(current, "history-instance"):
                raise ix.not_found(res_type, res_id)
        elif not ctx.access.reads_whole_organization(res_type):
            # Type and system history cannot be narrowed to a patient's record in SQL (a deleted
            # version has no content saying whose it was): only organization-wide readers have them.
            raise FhirError(
                403, "forbidden", "history of a whole type or system needs organization-wide access"
            )
        versions = await store.history(res_type, res_id, since, count + 1, offset)
        total = await store.count_history(res_type, res_id, since)
        if res_id is not None:
            versions = [v for v in versions if v.deleted or ctx.access.can_read(v, "history-instance")]
        for v in versions:
            if not v.deleted:
                ctx.saw(v)
    return fhir_response(history_bundle(base_url(request), path, versions, total, query, count, offset))


async def system_history(request: Request) -> Response:
    return await _history(request, None, None, "_history")


# -- type level ----------------------------------------------------------------------------------


async def type_history(request: Request, res_type: str) -> Response:
    return await _history(request, res_type, None, f"{res_type}/_history")


async def _search(request: Request, res_type: str, query: list[tuple[str, str]]) -> Response:
    async with _reader(request) as conn:
        ctx = _ctx(request, conn)
        req = ix.search_request(ctx, res_type, query)
        result = await ix.search(ctx, req)
    return fhir_response(searchset(ctx.base_url, req, result))


async def search_get(request: Request, res_type: str) -> Response:
    return await _search(request, res_type, list(request.query_params.multi_items()))


async def search_post(request: Request, res_type: str) -> Response:
    body = await _body(request)
    form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if body else []
    return await _search(request, res_type, [*request.query_params.multi_items(), *form])


async def validate_type(request: Request, res_type: str) -> Response:
    _check_content_type(request)
    return fhir_response(validate_op.run(res_type, ix.parse_json(await _body(request))))


async def create(request: Request, res_type: str) -> Response:
    _check_content_type(request)
    resource = ix.parse_json(await _body(request))
    # fhirpy's get_or_create sends the criteria as the query string of the POST; _format and
    # _pretty there are about the response, not criteria (alone they would match everything).
    criteria = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")]
    if_none_exist = request.headers.get("if-none-exist") or (urlencode(criteria) if criteria else None)
    async with _writing(request) as conn:
        out = await ix.create(_ctx(request, conn), res_type, resource, if_none_exist=if_none_exist)
    return _write_response(request, out)


async def conditional_update(request: Request, res_type: str) -> Response:
    _check_content_type(request)
    resource = ix.parse_json(await _body(request))
    async with _writing(request) as conn:
        out = await ix.conditional_update(
            _ctx(request, conn),
            res_type,
            request.url.query,
            resource,
            if_match=request.headers.get("if-match"),
        )
    return _write_response(request, out)


async def conditional_delete(request: Request, res_type: str) -> Response:
    async with _writing(request) as conn:
        out = await ix.conditional_delete(_ctx(request, conn), res_type, request.url.query)
    return fhir_response(None, out.status, out.headers or None)


# -- instance level ------------------------------------------------------------------------------


async def patient_everything(request: Request, res_id: str) -> Response:
    async with _reader(request) as conn:
        ctx = _ctx(request, conn)
        body = await everything.run(ctx, res_id, list(request.query_params.multi_items()))
    return fhir_response(body)


async def validate_instance(request: Request, res_type: str, res_id: str) -> Response:
    _check_content_type(request)
    return fhir_response(validate_op.run(res_type, ix.parse_json(await _body(request))))


async def vread(request: Request, res_type: str, res_id: str, version: str) -> Response:
    async with _reader(request) as conn:
        out = await ix.vread(_ctx(request, conn), res_type, res_id, version)
    assert out.stored is not None
    return fhir_response(out.stored.content, 200, _version_headers(request, out.stored, with_location=False))


async def instance_history(request: Request, res_type: str, res_id: str) -> Response:
    return await _history(request, res_type, res_id, f"{res_type}/{res_id}/_history")


async def read(request: Request, res_type: str, res_id: str) -> Response:
    async with _reader(request) as conn:
        out = await ix.read(_ctx(request, conn), res_type, res_id)
    stored = out.stored
    assert stored is not None
    headers = _version_headers(request, stored, with_location=False)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and ix.parse_version_header(if_none_match) == stored.version:
        return Response(status_code=304, headers=headers)
    params = request.query_params
    elements = [e for e in params.get("_elements", "").split(",") if e] or None
    summary = params.get("_summary")
    return fhir_response(resource_bytes(stored, elements, summary), 200, headers)


async def update(request: Request, res_type: str, res_id: str) -> Response:
    _check_content_type(request)
    resource = ix.parse_json(await _body(request))
    async with _writing(request) as conn:
        out = await ix.update(
            _ctx(request, conn), res_type, res_id, resource, if_match=request.headers.get("if-match")
        )
    return _write_response(request, out)


async def patch(request: Request, res_type: str, res_id: str) -> Response:
    ctype = _check_content_type(request)
    body = ix.parse_json(await _body(request))
    async with _writing(request) as conn:
        out = await ix.patch(
            _ctx(request, conn), res_type, res_id, body, ctype, if_match=request.headers.get("if-match")
        )
    return _write_response(request, out)


async def delete(request: Request, res_type: str, res_id: str) -> Response:
    async with _writing(request) as conn:
        out = await ix.delete(_ctx(request, conn), res_type, res_id, if_match=request.headers.get("if-match"))
    return fhir_response(None, out.status, out.headers or None)


# -- dispatch ------------------------------------------------------------------------------------
#
# One route for the whole FHIR API and a table keyed by the shape of the path: per-route regex
# matching and dependency solving cost more than a read itself (about 0.4 ms per request).

Handler = Callable[..., Awaitable[Response]]
_BY_SHAPE: dict[tuple[str, str], Handler] = {
    ("GET", "metadata"): lambda rq: metadata(rq),
    ("POST", ""): lambda rq: system_bundle(rq),
    ("GET", "_history"): lambda rq: system_history(rq),
    ("GET", "T"): search_get,
    ("POST", "T"): create,
    ("PUT", "T"): conditional_update,
    ("DELETE", "T"): conditional_delete,
    ("GET", "T/_history"): type_history,
    ("POST", "T/_search"): search_post,
    ("POST", "T/$validate"): validate_type,
    ("GET", "T/I"): read,
    ("PUT", "T/I"): update,
    ("PATCH", "T/I"): patch,
    ("DELETE", "T/I"): delete,
    ("GET", "T/I/_history"): instance_history,
    ("POST", "T/I/$validate"): validate_instance,
    ("GET", "T/I/$everything"): lambda rq, _type, res_id: patient_everything(rq, res_id),
    ("GET", "T/I/_history/V"): vread,
}
_FIXED = {"metadata", "_history", "_search", "$validate", "$everything"}


def _shape(parts: list[str]) -> tuple[str, list[str]]:
    """('T/I/_history/V', [type, id, version]) for a path split on '/'."""
    if not parts:
        return "", []
    if len(parts) == 1 and parts[0] in ("metadata", "_history"):
        return parts[0], []
    names = ("T", "I", None, "V")
    shape, args = [], []
    for n, part in enumerate(parts[:4]):
        if part in _FIXED and n > 0:
            shape.append(part)
        else:
            shape.append(names[n] or part)
            args.append(part)
    return "/".join(shape), args


async def dispatch(request: Request) -> Response:
    """Every failure becomes an OperationOutcome here, inside the route: an exception left to
    Starlette's outermost handler is re-raised after the response and closes the client's
    keep-alive connection."""
    try:
        return await _route(request)
    except FhirError as exc:
        return error_response(exc)
    except Exception as exc:
        return failure_response(request, exc)


async def _route(request: Request) -> Response:
    parts = [p for p in request.path_params.get("path", "").split("/") if p]
    shape, args = _shape(parts)
    if len(parts) > 4 or (shape == "T/I/$everything" and args[0] != "Patient"):
        raise FhirError(404, "not-supported", f"no FHIR interaction at /fhir/{'/'.join(parts)}")
    handler = _BY_SHAPE.get((request.method, shape))
    if handler is None:
        if request.method == "HEAD" and ("GET", shape) in _BY_SHAPE:
            handler = _BY_SHAPE[("GET", shape)]
        elif any(key[1] == shape for key in _BY_SHAPE):
            raise FhirError(405, "not-supported", f"{request.method} is not supported on this path")
        else:
            raise FhirError(404, "not-supported", f"no FHIR interaction at /fhir/{'/'.join(parts)}")
    if shape == "metadata":
        return await handler(request)  # public: it describes the server, never data
    request.state.fhir_trail = trail = _Trail()
    if ("GET" if request.method == "HEAD" else request.method, shape) in _READS:
        # A read answers on the connection that checked the token: one pool checkout, not two.
        async with _db(request).reader() as conn:
            actor = await _sign_in(request, conn, shape, args, trail)
            request.state.fhir_conn = conn
            return await _handle(request, handler, args, actor, shape, trail)
    async with _db(request).reader() as conn:
        actor = await _sign_in(request, conn, shape, args, trail)
    return await _handle(request, handler, args, actor, shape, trail)


_READS = {("GET", "T"), ("POST", "T/_search"), ("GET", "T/I"), ("GET", "T/I/_history"), ("GET", "T/I/_history/V"),
          ("GET", "T/_history"), ("GET", "_history"), ("GET", "T/I/$everything")}  # fmt: skip


async def _sign_in(request: Request, conn: Conn, shape: str, args: list[str], trail: _Trail) -> Actor:
    """The request's actor and its access (on ``request.state``); a refusal is audited."""
    try:
        actor = await authenticate(request, conn)
        request.state.fhir_access = await Access.load(conn, actor)
    except FhirError as exc:
        # Refused before anyone is known: the event names the network address alone.
        anonymous = Actor(ActorKind.ANONYMOUS, "")
        entries = _audit_entries(request, anonymous, request.method, shape, args, exc.status, trail)
        await sink_for(request.app.state).record(entries)
        raise
    return actor


@asynccontextmanager
async def _reader(request: Request) -> AsyncIterator[Conn]:
    """The read connection of this request: the one that checked its token, when there is one."""
    conn = getattr(request.state, "fhir_conn", None)
    if conn is not None:
        yield conn
        return
    async with _db(request).reader() as own:
        yield own


async def _handle(
    request: Request, handler: Handler, args: list[str], actor: Actor, shape: str, trail: _Trail
) -> Response:
    status = 500
    trail.event = lambda: _audit_entries(request, actor, request.method, shape, args, 200, trail)
    try:
        response = await handler(request, *args)
        status = response.status_code
        return response
    except FhirError as exc:
        status = exc.status
        raise
    finally:
        if not (trail.committed and status < 400):
            entries = _audit_entries(request, actor, request.method, shape, args, status, trail)
            await sink_for(request.app.state).record(entries)


@asynccontextmanager
async def _writing(request: Request) -> AsyncIterator[Conn]:
    """The unit of work of a write. Its success event is appended inside it, so the write and
    its audit event commit together - one commit, not two; if the commit fails, ``_handle``
    records the failure instead."""
    trail: _Trail = request.state.fhir_trail
    async with _db(request).transaction() as conn:
        yield conn
        if trail.event is not None:
            await append(conn, trail.prepared if trail.prepared is not None else trail.event())
            trail.committed = True


async def authenticate(request: Request, conn: Conn) -> Actor:
    """The actor of a FHIR request: a bearer token (SMART apps, devices, backend services) or, for
    reads only, the page session of a signed-in person. Anything else is 401."""
    if request.headers.get("authorization") is not None:
        actor = await actor_for_token(request, conn)
    elif request.method in ("GET", "HEAD") or (
        request.method == "POST" and request.url.path.endswith("/_search")
    ):
        # Cookies ride along on cross-site requests; only reads may use them (writes need a token).
        actor = await actor_for_request(request)
    else:
        actor = None
    if actor is None:
        raise FhirError(
            401, "login", "sign in, or send an access token (Authorization: Bearer)",
            headers={"WWW-Authenticate": 'Bearer realm="housecall"'},
        )  # fmt: skip
    return actor


@dataclass
class _Trail:
    """What one request touched, for its audit events (filled by the interactions' ``Ctx``)."""

    # patient -> the organization whose record it is, when not the actor's
    touched: dict[str, str | None] = field(default_factory=dict)
    refs: list[AuditRef] = field(default_factory=list)
    # The request's success event, built when asked; set once the actor is known.
    event: Callable[[], list[AuditEntry]] | None = None
    # Whether the success event was appended to the request's write (and so commits with it).
    committed: bool = False
    # The success event built ahead (``prepare``), while the database finished the write.
    prepared: list[AuditEntry] | None = None

    def prepare(self) -> None:
        """Build the success event now: everything the request touched is known."""
        if self.event is not None:
            self.prepared = self.event()


_INTERACTION = {
    ("POST", ""): "batch", ("GET", "_history"): "history-system", ("GET", "T"): "search-type",
    ("POST", "T"): "create", ("PUT", "T"): "update", ("DELETE", "T"): "delete",
    ("GET", "T/_history"): "history-type", ("POST", "T/_search"): "search-type",
    ("POST", "T/$validate"): "operation", ("GET", "T/I"): "read", ("HEAD", "T/I"): "read",
    ("PUT", "T/I"): "update", ("PATCH", "T/I"): "patch", ("DELETE", "T/I"): "delete",
    ("GET", "T/I/_history"): "history-instance", ("POST", "T/I/$validate"): "operation",
    ("GET", "T/I/$everything"): "operation", ("GET", "T/I/_history/V"): "vread",
}  # fmt: skip


def _audit_entries(
    request: Request, actor: Actor, method: str, shape: str, args: list[str], status: int, trail: _Trail
) -> list[AuditEntry]:
    """One AuditEvent per patient the request touched (or one naming what was asked), allowed and
    denied alike (IHE BALP, SECURITY.md rows 1 and 10). A successful write's events commit with
    the write (``_writing``); denials and failures wait for their event's commit; a successful
    read's event follows within milliseconds (decision 0007)."""
    interaction = _INTERACTION.get((method, shape), "operation")
    operation = next((a for a in shape.split("/") if a.startswith("$")), None)
    query: list[tuple[str, str]] = list(request.query_params.multi_items()) if "search" in interaction else []
    what = AuditRequest(
        interaction=interaction,
        res_type=args[0] if args else None,
        res_id=args[1] if len(args) > 1 else None,
        version=args[2] if len(args) > 2 else None,
        operation=operation,
        query=query,
        address=request.client.host if request.client else None,
    )
    outcome = (
        Outcome.SUCCESS
        if status < 400
        else Outcome.MINOR_FAILURE
        if status < 500
        else Outcome.SERIOUS_FAILURE
    )
    return entries_for_touched(actor, what, outcome, trail.touched, trail.refs)


class Shortcut:
    """Pure ASGI: sends ``/fhir`` requests straight to ``dispatch``, past the web app's middleware
    and router (error pages, request-size guard, language, exception handlers, route matching).

    ``dispatch`` already turns every failure into an OperationOutcome and reads bodies under its
    own limit, so none of those layers does anything for the FHIR API, and together they cost
    about a tenth of a read. The security-headers middleware still wraps this one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if (
            scope["type"] != "http"
            or not (path == "/fhir" or path.startswith("/fhir/"))
            or path.startswith("/fhir/.well-known/")  # SMART discovery: routes of their own
        ):
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"path": path[len("/fhir/") :]}
        response = await dispatch(Request(scope, receive, send))
        await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Mount the FHIR API and turn every failure under /fhir into an OperationOutcome.

    The routes keep ``/fhir`` in the app's route table (what the route-policy and header checks
    walk); requests reach ``dispatch`` through ``Shortcut`` before the router."""
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    app.router.routes.append(Route("/fhir", dispatch, methods=methods, include_in_schema=False))
    app.router.routes.append(Route("/fhir/{path:path}", dispatch, methods=methods, include_in_schema=False))
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: Shortcut(build())  # type: ignore[method-assign]

    @app.exception_handler(FhirError)
    async def _fhir_error(request: Request, exc: FhirError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return failure_response(request, exc)


def failure_response(request: Request, exc: Exception) -> Response:
    """An OperationOutcome for an exception that is not a FhirError: 409 for a write conflict,
    503 while the database is unreachable, else 500 - never a stack trace or version."""
    known = _conflict(exc) or _unavailable(exc)
    if known is not None:
        if known.status == 503:
            log.warning("database unavailable: %s", exc)
        return error_response(known)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(FhirError(500, "exception", "internal error; it has been logged"))


def _conflict(exc: Exception) -> FhirError | None:
    name = type(exc).__name__
    if name in ("UniqueViolationError", "SerializationError", "DeadlockDetectedError") or (
        name == "IntegrityError" and "UNIQUE" in str(exc)
    ):
        return FhirError(409, "conflict", "a concurrent change touched the same resource; retry the request")
    return None


_DB_DOWN = {"ConnectionDoesNotExistError", "CannotConnectNowError", "InterfaceError", "ConnectionRefusedError",
            "AdminShutdownError", "ConnectionResetError"}  # fmt: skip


def _unavailable(exc: Exception) -> FhirError | None:
    if isinstance(exc, DatabaseUnavailable) or type(exc).__name__ in _DB_DOWN:
        return FhirError(
            503, "transient", "the database is unavailable; try again shortly", headers={"Retry-After": "2"}
        )
    return None
