"""The FHIR RESTful interactions (R4 http.html), independent of HTTP.

The HTTP routes and the batch/transaction processor both call these, so a Bundle entry behaves
exactly like the same request made on its own. Each function works inside the caller's
transaction and raises ``FhirError`` for anything the client must be told.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch

from housecall.access.actor import Actor
from housecall.access.policy import Access, patients_of
from housecall.audit.events import MAX_AUDIT_REFS, AuditRef
from housecall.core.db import Conn
from housecall.core.settings import Settings
from housecall.fhir import jsonio
from housecall.fhir.errors import FhirError, OutcomeIssue, bad_request, not_found
from housecall.fhir.indexing import search_params
from housecall.fhir.search import SearchRequest, SearchResult, parse_search, run_search
from housecall.fhir.store import Store, Stored, delete_write, new_id, version_write
from housecall.fhir.validation import is_known_resource_type, validate_resource

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass
class Ctx:
    """One request's view of the store: its connection, and the access of the actor making it.

    Every interaction below asks ``access`` before it reads or writes; ``touched`` collects the
    patients whose records the request read or wrote (each with the organization the record is in,
    None for the actor's own), and ``refs`` the resources (with their organization and their
    patients), for the audit trail: an access to another organization's patient is recorded in that
    organization's trail, and each patient's event names that patient's resources."""

    conn: Conn
    settings: Settings
    base_url: str  # absolute base of the FHIR endpoint as the client addressed it, e.g. http://h/fhir
    access: Access
    strict: bool = False
    touched: dict[str, str | None] = field(default_factory=dict)
    refs: list[AuditRef] = field(default_factory=list)

    @property
    def store(self) -> Store:
        """The actor's organization: every write, and reads of the organization as a whole."""
        return Store(self.conn, self.access.actor.org_id)

    @property
    def reader(self) -> Store:
        """Reads of single resources and their history: the actor's organization, and the
        organizations where a patient's Consent grants the actor part of a record (decision 0010)."""
        return Store(self.conn, self.access.actor.org_id, also=self.access.foreign_orgs)

    @property
    def actor(self) -> Actor:
        return self.access.actor

    def _org_of(self, stored: Stored) -> str | None:
        org = stored.org_id
        return org if org is not None and org != self.access.actor.org_id else None

    def _note(self, patients: Iterable[str], org: str | None) -> None:
        for p in patients:
            # Ids are unique across organizations: a patient seen elsewhere is that organization's.
            self.touched[p] = org or self.touched.get(p)

    def visible(self, stored: Stored, interaction: str = "read") -> bool:
        """Whether the actor may see ``stored``; a refusal is noted against the patients whose record
        it is, so the denied attempt shows in their audit trail."""
        if self.access.can_read(stored, interaction):
            return True
        self._note(patients_of(stored), self._org_of(stored))
        return False

    def saw(self, stored: Stored, patients: Iterable[str] | None = None) -> None:
        """Note for the audit trail that this request acted on ``stored``."""
        org = self._org_of(stored)
        whose = frozenset(patients if patients is not None else patients_of(stored))
        self._note(whose, org)
        if len(self.refs) < MAX_AUDIT_REFS:
            self.refs.append((org, f"{stored.res_type}/{stored.res_id}/_history/{stored.version}", whose))


@dataclass
class Outcome:
    """What an interaction produced: a status, maybe a stored version, maybe another body."""

    status: int
    stored: Stored | None = None
    body: Any = None  # dict, or pre-serialized bytes
    headers: dict[str, str] = field(default_factory=dict)


def check_type(res_type: str) -> None:
    if not is_known_resource_type(res_type):
        raise FhirError(404, "not-supported", f"'{res_type}' is not a FHIR R4 resource type")


def check_id(res_id: str) -> None:
    if not (1 <= len(res_id) <= 64) or not set(res_id) <= ID_CHARS:
        raise bad_request(f"'{res_id[:80]}' is not a valid FHIR id", "value")


def validate(resource: Any, expected_type: str | None) -> dict[str, Any]:
    """Structural R4 validation; 400 with one issue per problem, each naming its element path."""
    if not isinstance(resource, dict):
        raise bad_request("the body must be a JSON object holding a FHIR resource", "structure")
    issues = validate_resource(resource, expected_type)
    if issues:
        first, *rest = issues
        raise FhirError(
            400,
            first.code,
            first.message,
            first.path,
            [OutcomeIssue(i.code, i.message, "error", i.path) for i in rest[:99]],
        )
    return resource


def parse_json(body: bytes) -> Any:
    if not body:
        raise bad_request("the request has no body", "structure")
    try:
        parsed = jsonio.loads(body)
    except jsonio.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", "structure") from None
    # orjson reads up to 1024 levels but writes at most 254, and the store serializes what it
    # stores: refuse what could not be written (a 400 here, not a 500 at commit). A few ms per MB.
    if isinstance(parsed, dict | list) and body.count(b"[") + body.count(b"{") > 250:
        try:
            jsonio.dumps(parsed)
        except jsonio.JSONEncodeError:
            raise bad_request("the body is nested too deeply (at most 250 levels)", "structure") from None
    return parsed


def _current_or_gone(stored: Stored | None, res_type: str, res_id: str) -> Stored:
    if stored is None:
        raise not_found(res_type, res_id)
    if stored.deleted:
        raise FhirError(410, "deleted", f"{res_type}/{res_id} was deleted", headers={"ETag": stored.etag})
    return stored


def parse_version_header(value: str) -> int | None:
    """Accept ``W/"3"``, ``"3"`` and a bare ``3`` (fhirpy sends the bare form)."""
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    return int(v) if v.isdigit() else None


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from the server-owned ``meta.versionId`` and ``meta.lastUpdated``."""

    def strip(resource: dict[str, Any]) -> dict[str, Any]:
        out = dict(resource)
        meta = dict(out.pop("meta", None) or {})
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if meta:
            out["meta"] = meta
        return out

    # Compared as written, so that a decimal's precision (1.0 → 1.00) counts as a change.
    return jsonio.dumps(strip(a), sort_keys=True) == jsonio.dumps(strip(b), sort_keys=True)


# -- read ---------------------------------------------------------------------------------------


async def read(ctx: Ctx, res_type: str, res_id: str) -> Outcome:
    check_type(res_type)
    stored = await ctx.reader.read(res_type, res_id)
    if stored is not None and not ctx.visible(stored):
        raise not_found(res_type, res_id)
    stored = _current_or_gone(stored, res_type, res_id)
    ctx.saw(stored)
    return Outcome(200, stored)


async def vread(ctx: Ctx, res_type: str, res_id: str, version: str) -> Outcome:
    check_type(res_type)
    if not version.isdigit():
        raise not_found(res_type, f"{res_id}/_history/{version}")
    stored = await ctx.reader.read_version(res_type, res_id, int(version))
    if stored is None or not ctx.visible(stored, "vread"):
        raise not_found(res_type, f"{res_id}/_history/{version}")
    ctx.saw(stored)
    if stored.deleted:
        raise FhirError(410, "deleted", f"{res_type}/{res_id} version {version} is a deletion")
    return Outcome(200, stored)


# -- create / update / delete / patch -----------------------------------------------------------


async def refuse_foreign_write(ctx: Ctx, interaction: str, res_type: str, res_id: str) -> None:
    """A write aimed at a resource the actor reads through another organization's Consent: 403,
    since a Consent grants reads only (a resource the actor cannot see stays an unknown id). Asked
    only when the id is not the actor's organization's and a Consent elsewhere names the actor."""
    if not ctx.access.foreign_orgs:
        return
    stored = await ctx.reader.read(res_type, res_id)
    if stored is not None and stored.org_id != ctx.actor.org_id and ctx.access.can_read(stored):
        raise FhirError(
            403, "forbidden",
            f"{res_type}/{res_id} is kept by another organization; a patient's Consent lets you read it, "
            f"not {interaction} it",
        )  # fmt: skip


async def find_by_criteria(ctx: Ctx, res_type: str, criteria: str, *, limit: int = 2) -> list[Stored]:
    """Resources matching a conditional-interaction query (unknown parameters are errors here)."""
    query = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if not query:
        raise bad_request("conditional interaction without search criteria", "invalid")
    req = parse_search(res_type, query, strict=True, default_count=limit, max_count=max(limit, 1000))
    req.count = limit
    req.total = "none"
    # Conditional interactions on the same criteria take turns until their transaction ends, so two
    # concurrent conditional creates cannot both find nothing and both create. The search below
    # then runs on a fresh snapshot (read committed) and sees what the previous holder committed.
    ctx.access.check_search_patients(res_type, named_patients(req))
    await ctx.store.lock_name(f"criteria:{res_type}?{urlencode(sorted(query))}")
    result = await run_search(
        ctx.conn, req, org_id=ctx.actor.org_id, base_url=ctx.base_url,
        restrict=ctx.access.search_restriction(res_type),
    )  # fmt: skip
    return result.matches


async def create(
    ctx: Ctx, res_type: str, resource: Any, *, if_none_exist: str | None = None, res_id: str | None = None
) -> Outcome:
    """Create with a server-assigned id (``res_id`` only from a transaction's identity rules)."""
    check_type(res_type)
    resource = validate(resource, res_type)
    if if_none_exist:
        found = await find_by_criteria(ctx, res_type, if_none_exist)
        if len(found) > 1:
            raise FhirError(412, "multiple-matches", f"If-None-Exist matched {len(found)} resources")
        if found:
            ctx.saw(found[0])
            return Outcome(200, found[0])
    write = version_write(resource, res_id or new_id(), 1, replace=False)
    ctx.access.check_write("create", res_type, write.res_id, resource, None, write_patients(write))
    await ctx.store.apply([write])
    ctx.saw(write.stored(), write_patients(write))
    return Outcome(201, write.stored())


async def update(
    ctx: Ctx, res_type: str, res_id: str, resource: Any, *, if_match: str | None = None
) -> Outcome:
    """Update, or create with the client's id (update-as-create, http.html#upsert)."""
    check_type(res_type)
    check_id(res_id)
    resource = validate(resource, res_type)
    body_id = resource.get("id")
    if body_id is None:
        raise bad_request("the resource in a PUT must carry its id", "required", f"{res_type}.id")
    if body_id != res_id:
        raise bad_request(
            f"the id in the body ({body_id}) differs from the URL ({res_id})", "invalid", f"{res_type}.id"
        )
    current = await ctx.store.lock_current(res_type, res_id)
    if current is not None and not ctx.visible(current):
        raise not_found(res_type, res_id)
    if current is None:
        await refuse_foreign_write(ctx, "update", res_type, res_id)
    if if_match is not None and (
        current is None or current.deleted or parse_version_header(if_match) != current.version
    ):
        raise FhirError(412, "conflict", f"If-Match {if_match} does not match the current version")
    if current is None:
        write = version_write(resource, res_id, 1, replace=False)
        status = 201
    elif not current.deleted and same_content(current.resource(), resource):
        # No-op update: nothing changed, so no new version (keeps re-imports idempotent).
        ctx.access.check_write("update", res_type, res_id, resource, current)
        ctx.saw(current)
        return Outcome(200, current)
    else:
        write = version_write(resource, res_id, current.version + 1, replace=True)
        status = 201 if current.deleted else 200
    ctx.access.check_write(
        "update" if current is not None else "create",
        res_type,
        res_id,
        resource,
        current,
        write_patients(write),
    )
    await ctx.store.apply([write])
    ctx.saw(write.stored(), write_patients(write))
    return Outcome(status, write.stored())


async def conditional_update(
    ctx: Ctx, res_type: str, criteria: str, resource: Any, *, if_match: str | None = None
) -> Outcome:
    check_type(res_type)
    found = await find_by_criteria(ctx, res_type, criteria)
    if len(found) > 1:
        raise FhirError(412, "multiple-matches", f"the criteria matched {len(found)} resources")
    if not found:
        body = validate(resource, res_type)
        if body.get("id"):
            return await update(ctx, res_type, body["id"], body, if_match=if_match)
        return await create(ctx, res_type, body)
    target = found[0]
    if isinstance(resource, dict) and resource.get("id") not in (None, target.res_id):
        raise bad_request("the id in the body differs from the resource the criteria matched")
    if isinstance(resource, dict):
        resource["id"] = target.res_id
    return await update(ctx, res_type, target.res_id, resource, if_match=if_match)


async def delete(ctx: Ctx, res_type: str, res_id: str, *, if_match: str | None = None) -> Outcome:
    """Soft delete: a new version with no content; later reads answer 410. Idempotent."""
    check_type(res_type)
    current = await ctx.store.lock_current(res_type, res_id)
    if current is not None and not ctx.visible(current):
        current = None  # not visible to this actor: answered exactly as an unknown id
    elif current is None:
        await refuse_foreign_write(ctx, "delete", res_type, res_id)
    if if_match is not None and (current is None or parse_version_header(if_match) != current.version):
        raise FhirError(412, "conflict", f"If-Match {if_match} does not match the current version")
    if current is None or current.deleted:
        # Nothing to delete (R4 allows 204 here; Bundles such as HL7's example rely on it).
        ctx.access.check_interaction("delete", res_type)
        return Outcome(204)
    ctx.access.check_write("delete", res_type, res_id, None, current)
    ctx.saw(current)
    write = delete_write(res_type, res_id, current.version + 1)
    await ctx.store.apply([write])
    return Outcome(204, headers={"ETag": f'W/"{write.version}"'})


async def conditional_delete(ctx: Ctx, res_type: str, criteria: str) -> Outcome:
    check_type(res_type)
    found = await find_by_criteria(ctx, res_type, criteria)
    if len(found) > 1:
        raise FhirError(412, "multiple-matches", f"the criteria matched {len(found)} resources")
    if not found:
        return Outcome(204)
    return await delete(ctx, res_type, found[0].res_id)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


async def patch(
    ctx: Ctx, res_type: str, res_id: str, body: Any, content_type: str, *, if_match: str | None = None
) -> Outcome:
    """JSON Patch (application/json-patch+json) or merge patch (merge-patch+json, or a partial
    resource sent as application/json the way fhirpy does)."""
    check_type(res_type)
    current = await ctx.store.lock_current(res_type, res_id)
    if current is not None and not ctx.visible(current):
        raise not_found(res_type, res_id)
    if current is None:
        await refuse_foreign_write(ctx, "patch", res_type, res_id)
    current = _current_or_gone(current, res_type, res_id)
    if if_match is not None and parse_version_header(if_match) != current.version:
        raise FhirError(412, "conflict", f"If-Match {if_match} does not match the current version")
    resource = current.resource()
    if "json-patch" in content_type or isinstance(body, list):
        try:
            patched = jsonpatch.JsonPatch(body).apply(resource)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise FhirError(422, "processing", f"the JSON Patch cannot be applied: {exc}") from None
        try:  # a value put deep into the resource can nest it past what the store can write
            jsonio.dumps(patched)
        except jsonio.JSONEncodeError:
            raise FhirError(422, "processing", "the patched resource would be nested too deeply") from None
    elif isinstance(body, dict):
        patched = _merge_patch(resource, body)
    else:
        raise bad_request("PATCH takes a JSON Patch array or a merge-patch object", "structure")
    if (
        not isinstance(patched, dict)
        or patched.get("resourceType") != res_type
        or patched.get("id") != res_id
    ):
        raise FhirError(422, "processing", "a patch may not change resourceType or id")
    return await update(ctx, res_type, res_id, patched)


# -- search and history -------------------------------------------------------------------------


def search_request(ctx: Ctx, res_type: str, query: list[tuple[str, str]]) -> SearchRequest:
    check_type(res_type)
    return parse_search(
        res_type,
        query,
        strict=ctx.strict,
        default_count=ctx.settings.default_count,
        max_count=ctx.settings.max_count,
    )


async def search(ctx: Ctx, req: SearchRequest) -> SearchResult:
    """A search confined to what the actor may see: the condition is part of the SQL (so totals
    and pages are right), included resources are filtered, and naming a patient the actor may not
    see answers 404 as reading that patient would."""
    access = ctx.access
    access.check_interaction("search", req.res_type)
    access.check_search_patients(req.res_type, named_patients(req))
    result = await run_search(
        ctx.conn, req, org_id=ctx.actor.org_id, base_url=ctx.base_url,
        restrict=access.search_restriction(req.res_type), admit=access.admit,
        also=access.search_foreign(req.res_type), also_orgs=access.foreign_orgs,
    )  # fmt: skip
    for stored in result.matches:
        ctx.saw(stored)
    for stored in result.included:
        ctx.saw(stored)
    return result


def named_patients(req: SearchRequest) -> list[str]:
    """Patient ids a search names: ``Patient/x`` in any parameter, and a bare id in a reference
    parameter that can point at a Patient (``subject=x``, ``patient=x``)."""
    params = search_params(req.res_type)
    out = []
    for flt in req.filters:
        if flt.chain or flt.modifier not in (None, "", "Patient"):
            continue
        for value in flt.values:
            ref = value.rsplit("/fhir/", 1)[-1]
            if ref.startswith("Patient/") and ref.count("/") == 1:
                out.append(ref[len("Patient/") :])
            elif ref and "/" not in ref and "Patient" in getattr(params.get(flt.code), "targets", ()):
                out.append(ref)
    return out


def write_patients(write: Any) -> set[str]:
    return set(write.rows.patients) if write.rows is not None else set()
