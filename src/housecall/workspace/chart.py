"""The clinician's patients and a patient's chart.

``/workspace/patients`` lists the patients the person has a care relationship with (the access path
confines the Patient search to them), searchable by name. ``/workspace/patients/{id}`` is the chart:
the summary lists (shared with the portal's record page), the timeline of encounters, the latest
results, recent messages, documents and upcoming appointments. A patient outside the person's care
relationships answers 404, exactly as an unknown one does.

Slots other features fill in: result charts (``results_link``) and the message thread
(``messages_link``) link to their pages once those exist; until then the chart shows the latest
values as a table and the latest messages as a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from housecall.billing.statements import concept_text
from housecall.identity.clock import clock
from housecall.portal import record
from housecall.web import csrf, records
from housecall.web.i18n import _
from housecall.web.pages import render
from housecall.web.records import Records
from housecall.workspace.inbox import person_name
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
UPCOMING = "proposed,pending,booked,arrived,checked-in,waitlist"
# Results by their category's system as well as its code: each is then one range of the patient's
# index rows, newest first, merged into the page (decision 0032).
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
RESULT_CATEGORIES = f"{_CATEGORY}|laboratory,{_CATEGORY}|vital-signs"
# Pages other features add; the chart links to them when they are registered (path templates).
SLOTS: dict[str, str] = {}  # "results" -> "/workspace/patients/{id}/results", "messages" -> …


@dataclass(frozen=True)
class Row:
    """A patient in the list."""

    id: str
    name: str
    birth_date: str
    gender: str


@dataclass(frozen=True)
class Visit:
    date: str
    kind: str
    service: str
    who: str
    status: str


@dataclass(frozen=True)
class Result:
    date: str
    name: str
    value: str
    flag: str


@dataclass(frozen=True)
class Message:
    date: str
    sender: str
    text: str


def quantity_text(obs: dict[str, Any]) -> str:
    """An Observation's value as a person reads it (components joined: 128/82 mmHg)."""
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        return f"{q.get('value', '')} {q.get('unit') or q.get('code') or ''}".strip()
    if "valueCodeableConcept" in obs:
        return concept_text(obs["valueCodeableConcept"])
    for key in ("valueString", "valueInteger", "valueBoolean"):
        if key in obs:
            return str(obs[key])
    parts = [quantity_text(c) for c in obs.get("component") or []]
    if parts and all(p.endswith(" mmHg") for p in parts):
        return "/".join(p.removesuffix(" mmHg") for p in parts) + " mmHg"
    return ", ".join(p for p in parts if p)


def _names(included: dict[str, dict[str, Any]], refs: list[str]) -> str:
    return ", ".join(n for n in (person_name(included.get(r)) for r in refs) if n)


async def patients(rec: Records, name: str = "", limit: int = 50) -> list[Row]:
    query = [("_sort", "family"), ("_count", str(limit))]
    if name:
        query.append(("name", name))
    page = await rec.search("Patient", query)
    return [
        Row(p["id"], person_name(p) or p["id"], p.get("birthDate", ""), p.get("gender", "")) for p in page
    ]


async def encounters(rec: Records, pid: str) -> list[Visit]:
    page = await rec.search(
        "Encounter",
        [("patient", pid), ("_sort", "-date"), ("_count", "20"), ("_include", "Encounter:practitioner")],
    )
    out = []
    for e in page:
        who = [(p.get("individual") or {}).get("reference", "") for p in e.get("participant") or []]
        out.append(Visit(
            date=str((e.get("period") or {}).get("start", "")),
            kind=concept_text((e.get("type") or [{}])[0]) or str((e.get("class") or {}).get("display", "")),
            service=concept_text(e.get("serviceType")),
            who=_names(page.included, who),
            status=str(e.get("status", "")),
        ))  # fmt: skip
    return out


async def results(rec: Records, pid: str) -> list[Result]:
    page = await rec.search(
        "Observation",
        [("patient", pid), ("category", RESULT_CATEGORIES), ("status", "final,amended,corrected"),
         ("_sort", "-date"), ("_count", "20")],
    )  # fmt: skip
    out = []
    for o in page:
        flag = concept_text((o.get("interpretation") or [{}])[0]) if o.get("interpretation") else ""
        out.append(Result(str(o.get("effectiveDateTime") or o.get("issued") or ""), concept_text(o.get("code")),
                          quantity_text(o), flag))  # fmt: skip
    return out


async def messages(rec: Records, pid: str) -> list[Message]:
    page = await rec.search(
        "Communication",
        [("patient", pid), ("_sort", "-sent"), ("_count", "5"), ("_include", "Communication:sender")],
    )
    out = []
    for c in page:
        text = " ".join(str(p.get("contentString", "")) for p in c.get("payload") or []).strip()
        sender = (c.get("sender") or {}).get("reference", "")
        out.append(Message(str(c.get("sent", "")), _names(page.included, [sender]), text[:200]))
    return out


async def upcoming(rec: Records, pid: str) -> list[Visit]:
    now = datetime.fromtimestamp(clock.now(), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    query = [("patient", pid), ("status", UPCOMING), ("date", f"ge{now}"), ("_sort", "date"), ("_count", "10"),
             ("_include", "Appointment:practitioner")]  # fmt: skip
    page = await rec.search("Appointment", query)
    out = []
    for a in page:
        who = [(p.get("actor") or {}).get("reference", "") for p in a.get("participant") or []]
        doctors = [w for w in who if w.startswith("Practitioner/")]
        kind = concept_text(a.get("appointmentType")) or str(a.get("description", ""))
        service = concept_text((a.get("serviceType") or [{}])[0])
        out.append(
            Visit(
                str(a.get("start", "")),
                kind,
                service,
                _names(page.included, doctors),
                str(a.get("status", "")),
            )
        )
    return out


@router.get("/workspace/patients")
async def patients_page(request: Request, q: str = "") -> Response:
    # Care team only: the patients the person has a care relationship with, by name.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    q = q.strip()[:100]
    async with records.reading(request, actor) as rec:
        rows = await patients(rec, q)
    return render(request, "workspace/patients.html", rows=rows, q=q)


@router.get("/workspace/patients/{patient_id}")
async def chart_page(request: Request, patient_id: str) -> Response:
    # Care team only: one patient's chart, if the person has a care relationship with them (else 404).
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    pid = f"Patient/{patient_id}"
    async with records.reading(request, actor) as rec:
        patient = await rec.read("Patient", patient_id)
        if patient is None:
            return render(request, "identity/error.html", status=404, title=_("Not found"),
                          message=_("That patient is not among your patients."), back="/workspace/patients")  # fmt: skip
        context: dict[str, Any] = {
            "summary": await record.summary(rec, patient_id),
            "visits": await encounters(rec, pid),
            "results": await results(rec, pid),
            "messages": await messages(rec, pid),
            "documents": await record.documents(rec, patient_id, limit=10),
            "upcoming": await upcoming(rec, pid),
        }
    slots = {k: v.format(id=patient_id) for k, v in SLOTS.items()}
    return render(request, "workspace/chart.html", patient=patient, name=person_name(patient) or patient_id,
                  slots=slots, **context)  # fmt: skip


@router.get("/workspace/patients/{patient_id}/documents/{doc_id}.pdf")
async def chart_document_pdf(request: Request, patient_id: str, doc_id: str) -> Response:
    # Care team only: a document of a patient the person cares for, as a PDF (else 404).
    found = await _chart_document(request, patient_id, doc_id)
    if isinstance(found, Response):
        return found
    doc, name = found
    if doc.text is None and doc.original_pdf is None:
        return _no_document(request, patient_id)
    return Response(record.as_pdf(doc, name), media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="document-{doc.id}.pdf"', "Cache-Control": "no-store"})  # fmt: skip


@router.get("/workspace/patients/{patient_id}/documents/{doc_id}")
async def chart_document(request: Request, patient_id: str, doc_id: str) -> Response:
    # Care team only: a document of a patient the person cares for, read in the page (else 404).
    found = await _chart_document(request, patient_id, doc_id)
    if isinstance(found, Response):
        return found
    doc, name = found
    base = f"/workspace/patients/{patient_id}"
    return render(request, "portal/document.html", doc=doc, patient_name=name,
                  pdf_href=f"{base}/documents/{doc.id}.pdf", back_href=base, back_label=_("Back to the chart"))  # fmt: skip


def _no_document(request: Request, patient_id: str) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("We could not find that document."), back=f"/workspace/patients/{patient_id}")  # fmt: skip


async def _chart_document(
    request: Request, patient_id: str, doc_id: str
) -> tuple[record.Document, str] | Response:
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        raw = await rec.read("DocumentReference", doc_id)
        subject = ((raw or {}).get("subject") or {}).get("reference")
        doc = await record.document(rec, doc_id) if subject == f"Patient/{patient_id}" else None
        patient = await rec.read("Patient", patient_id) if doc else None
    if doc is None:
        return _no_document(request, patient_id)
    return doc, person_name(patient)


def install(app: FastAPI) -> None:
    app.include_router(router)
