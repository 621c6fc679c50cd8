"""Response bodies: resources as stored, search and history Bundles with absolute links.

Stored JSON is spliced into Bundles as bytes (no parse and re-serialize) unless the client asked
for a subset with ``_elements`` or ``_summary``.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlencode

import orjson

from housecall.fhir.search import SearchRequest, SearchResult
from housecall.fhir.store import Stored, instant, now_us
from housecall.fhir.validation import required_elements

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _mandatory(res_type: str) -> frozenset[str]:
    """Top-level elements with min >= 1 (every variant of a required choice) and their ``_name``
    siblings: a subset must keep them or it is not valid R4 (search.html: _summary=text returns
    "only the text, id, meta, and only top-level mandatory elements"; _elements: "Servers SHOULD
    always return mandatory elements")."""
    names = required_elements(res_type)
    return names | {f"_{n}" for n in names}


def subset(resource: dict[str, Any], elements: list[str] | None, summary: str | None) -> dict[str, Any]:
    mandatory = _mandatory(str(resource.get("resourceType")))
    if elements:
        keep = set(elements) | set(_ALWAYS) | mandatory
        out = {k: v for k, v in resource.items() if k in keep}
    elif summary == "text":
        out = {k: v for k, v in resource.items() if k in (*_ALWAYS, "text") or k in mandatory}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    else:
        return resource
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out


def resource_bytes(stored: Stored, elements: list[str] | None = None, summary: str | None = None) -> bytes:
    assert stored.content is not None
    if not elements and summary not in ("text", "data"):
        return stored.content
    return orjson.dumps(subset(orjson.loads(stored.content), elements, summary))


def _entry(
    base_url: str, stored: Stored, mode: str | None, elements: list[str] | None, summary: str | None
) -> bytes:
    full_url = f"{base_url}/{stored.res_type}/{stored.res_id}".encode()
    out = b'{"fullUrl":"' + full_url + b'","resource":' + resource_bytes(stored, elements, summary)
    if mode:
        out += b',"search":{"mode":"' + mode.encode() + b'"}'
    return out + b"}"


def searchset(base_url: str, req: SearchRequest, result: SearchResult) -> bytes:
    def link(offset: int) -> str:
        query = [*[(k, v) for k, v in req.used if k != "_offset"], ("_offset", str(offset))]
        return f"{base_url}/{req.res_type}?{urlencode(query)}"

    links = [{"relation": "self", "url": link(req.offset)}]
    if req.count:
        links.append({"relation": "first", "url": link(0)})
        if result.has_more:
            links.append({"relation": "next", "url": link(req.offset + req.count)})
        if req.offset > 0:
            links.append({"relation": "previous", "url": link(max(0, req.offset - req.count))})
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        head["total"] = result.total
    head["link"] = links
    entries = [_entry(base_url, s, "match", req.elements, req.summary) for s in result.matches]
    entries += [_entry(base_url, s, "include", req.elements, req.summary) for s in result.included]
    if req.ignored:
        oo = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "warning",
                    "code": "not-supported",
                    "diagnostics": f"search parameter ignored: {k}",
                }
                for k in req.ignored
            ],
        }
        entries.append(b'{"resource":' + orjson.dumps(oo) + b',"search":{"mode":"outcome"}}')
    body = orjson.dumps(head)
    if not entries:
        return body
    return body[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def history_bundle(
    base_url: str, path: str, versions: list[Stored], total: int | None, query: list[tuple[str, str]],
    count: int, offset: int,
) -> bytes:  # fmt: skip
    def link(off: int) -> str:
        return f"{base_url}/{path}?{urlencode([*[(k, v) for k, v in query if k != '_offset'], ('_offset', str(off))])}"

    links = [{"relation": "self", "url": link(offset)}]
    if len(versions) > count:
        links.append({"relation": "next", "url": link(offset + count)})
    if offset:
        links.append({"relation": "previous", "url": link(max(0, offset - count))})
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if total is not None:
        head["total"] = total
    head["link"] = links
    entries = []
    for s in versions[:count]:
        url = f"{s.res_type}/{s.res_id}"
        request = {"method": "DELETE" if s.deleted else ("POST" if s.version == 1 else "PUT"), "url": url}
        response = {
            "status": "204" if s.deleted else ("201" if s.version == 1 else "200"),
            "etag": s.etag,
            "lastModified": instant(s.last_updated),
        }
        item = b'{"fullUrl":"' + f"{base_url}/{url}".encode() + b'"'
        if not s.deleted and s.content is not None:
            item += b',"resource":' + s.content
        item += b',"request":' + orjson.dumps(request) + b',"response":' + orjson.dumps(response) + b"}"
        entries.append(item)
    body = orjson.dumps(head)
    if not entries:
        return body
    return body[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def now_instant() -> str:
    return instant(now_us())
