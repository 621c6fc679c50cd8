"""``Patient/[id]/$everything``: the patient and every resource in their compartment
(R4 patient-operation-everything.html). ``_type`` narrows the types, ``_since`` the change time,
``_count``/``_offset`` page the compartment."""

from __future__ import annotations

from typing import Any

from housecall.fhir import interactions as ix
from housecall.fhir import jsonio
from housecall.fhir.errors import bad_request
from housecall.fhir.indexing import date_bounds
from housecall.fhir.render import resource_bytes
from housecall.fhir.store import RESOURCE_COLUMNS, stored_row

MAX_EVERYTHING = 10_000


async def run(ctx: ix.Ctx, patient_id: str, query: list[tuple[str, str]]) -> bytes:
    params = dict(query)
    patient = await ix.read(ctx, "Patient", patient_id)
    assert patient.stored is not None
    # The record is the patient's organization's: another one's when a Consent there granted it.
    home = patient.stored.org_id or ctx.actor.org_id
    where = ["c.patient_id = $1", "r.org_id = $2", "NOT r.deleted", "r.res_type <> 'Patient'"]
    args: list[Any] = [patient_id, home]
    if params.get("_type"):
        types = [t.strip() for t in params["_type"].split(",") if t.strip()]
        for t in types:
            ix.check_type(t)
        args += types
        where.append(
            f"r.res_type IN ({', '.join(f'${i}' for i in range(len(args) - len(types) + 1, len(args) + 1))})"
        )
    if params.get("_since"):
        try:
            args.append(date_bounds(params["_since"])[0])
        except ValueError:
            raise bad_request("_since must be an instant", "value") from None
        where.append(f"r.last_updated >= ${len(args)}")
    count = (
        min(int(params["_count"]), MAX_EVERYTHING) if params.get("_count", "").isdigit() else MAX_EVERYTHING
    )
    offset = int(params["_offset"]) if params.get("_offset", "").isdigit() else 0
    args += [count + 1, offset]
    cols = ", ".join(f"r.{c.strip()}" for c in RESOURCE_COLUMNS.split(","))
    rows = await ctx.conn.fetch(
        f"SELECT {cols} FROM resource r JOIN compartment c ON c.res_type = r.res_type AND c.res_id = r.res_id "
        f"WHERE {' AND '.join(where)} ORDER BY r.res_type, r.res_id LIMIT ${len(args) - 1} OFFSET ${len(args)}",
        *args,
    )
    found = [stored_row(r) for r in rows]
    if home != ctx.actor.org_id:
        for s in found:
            s.org_id = home
    has_more = len(found) > count
    # The patient is visible to the actor; what of their record is (by role, scopes, consent) is
    # decided per resource. Paging counts the compartment, so a page may hold fewer than _count.
    found = ctx.access.admit(found[:count])
    for s in found:
        ctx.saw(s, (patient_id,))
    members = ([patient.stored] if offset == 0 else []) + found
    base = ctx.base_url
    links = [
        {
            "relation": "self",
            "url": f"{base}/Patient/{patient_id}/$everything?_offset={offset}&_count={count}",
        }
    ]
    if has_more:
        links.append({"relation": "next", "url": f"{base}/Patient/{patient_id}/$everything?_offset={offset + count}"
                      f"&_count={count}"})  # fmt: skip
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if not has_more and offset == 0:
        head["total"] = len(members)
    entries = [
        b'{"fullUrl":"' + f"{base}/{s.res_type}/{s.res_id}".encode() + b'","resource":' + resource_bytes(s)
        + b',"search":{"mode":"match"}}'
        for s in members
    ]  # fmt: skip
    return jsonio.dumps(head)[:-1] + b',"entry":[' + b",".join(entries) + b"]}"
