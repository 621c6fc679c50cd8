"""The patient's health record summary and visit documents, in the portal.

``/portal/record``: problems, medications, allergies and immunizations (the same lists the
clinician's chart starts with: ``summary`` is shared), with links to who looked at the record and
the connected apps. ``/portal/documents``: after-visit summaries and notes (DocumentReference) to
read in the page and download as PDF.

A document's text is its attachment: inline ``data`` (what Housecall writes), or a ``Binary/…``
``url``. Binary is kept from people by the access path (``RESTRICTED_TYPES``), so it is read as the
organization's service only after the DocumentReference itself was shown to be the reader's. A PDF
attachment is handed back as it is; a text one is typeset by ``web/pdf.py``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from housecall.billing.statements import concept_text, service
from housecall.portal.views import portal_actor
from housecall.web import csrf, i18n, pdf, records
from housecall.web.i18n import _
from housecall.web.pages import render
from housecall.web.records import Records
from housecall.workspace.inbox import person_name

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
ACTIVE = "active,recurrence,relapse"
MAX_TEXT = 200_000  # characters of a document shown or typeset; longer ones are cut with a note


@dataclass(frozen=True)
class Entry:
    """One line of a summary list: what, when, and a detail (dose, reaction, status)."""

    text: str
    date: str = ""
    detail: str = ""
    warn: bool = False


@dataclass
class Summary:
    problems: list[Entry] = field(default_factory=list)
    medications: list[Entry] = field(default_factory=list)
    allergies: list[Entry] = field(default_factory=list)
    immunizations: list[Entry] = field(default_factory=list)


def _medication(res: dict[str, Any]) -> str:
    return concept_text(res.get("medicationCodeableConcept")) or (res.get("medicationReference") or {}).get(
        "display", ""
    )


async def summary(rec: Records, patient_id: str) -> Summary:
    """The patient's active problems, current medications, allergies and immunizations, as the
    reader may see them."""
    pid = f"Patient/{patient_id}"
    out = Summary()
    for c in await rec.search(
        "Condition", [("patient", pid), ("clinical-status", ACTIVE), ("_count", "100")]
    ):
        out.problems.append(
            Entry(concept_text(c.get("code")), str(c.get("onsetDateTime") or c.get("recordedDate") or ""))
        )
    out.problems.sort(key=lambda e: e.text.lower())
    for m in await rec.search(
        "MedicationRequest", [("patient", pid), ("status", "active"), ("_count", "100")]
    ):
        dose = ((m.get("dosageInstruction") or [{}])[0]).get("text", "")
        out.medications.append(Entry(_medication(m), str(m.get("authoredOn", "")), dose))
    for m in await rec.search(
        "MedicationStatement", [("patient", pid), ("status", "active"), ("_count", "100")]
    ):
        dose = ((m.get("dosage") or [{}])[0]).get("text", "")
        out.medications.append(Entry(_medication(m), str(m.get("effectiveDateTime", "")), dose))
    out.medications.sort(key=lambda e: e.text.lower())
    for a in await rec.search(
        "AllergyIntolerance", [("patient", pid), ("clinical-status", "active"), ("_count", "100")]
    ):
        reactions = [concept_text(cc) for r in a.get("reaction") or [] for cc in r.get("manifestation") or []]
        detail = ", ".join(r for r in reactions if r)
        warn = a.get("criticality") == "high"
        out.allergies.append(
            Entry(concept_text(a.get("code")), str(a.get("recordedDate", "")), detail, warn=warn)
        )
    for i in await rec.search("Immunization", [("patient", pid), ("_sort", "-date"), ("_count", "100")]):
        if i.get("status") != "completed":
            continue
        out.immunizations.append(
            Entry(concept_text(i.get("vaccineCode")), str(i.get("occurrenceDateTime", "")))
        )
    return out


# -- documents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    kind: str
    date: str
    author: str
    content_type: str
    text: str | None = None  # a text attachment, decoded
    original_pdf: bytes | None = None  # a PDF attachment, as stored


def _title(doc: dict[str, Any]) -> str:
    for content in doc.get("content") or []:
        title = (content.get("attachment") or {}).get("title")
        if title:
            return str(title)
    return str(doc.get("description") or concept_text(doc.get("type")) or _("Document"))


def _brief(doc: dict[str, Any], authors: dict[str, dict[str, Any]]) -> Document:
    author = ""
    for ref in doc.get("author") or []:
        author = person_name(authors.get(ref.get("reference", ""))) or ref.get("display", "")
        if author:
            break
    attachment = ((doc.get("content") or [{}])[0]).get("attachment") or {}
    return Document(
        id=doc["id"],
        title=_title(doc),
        kind=concept_text(doc.get("type")),
        date=str(doc.get("date") or attachment.get("creation") or ""),
        author=author,
        content_type=str(attachment.get("contentType", "")),
    )


def _listed(doc: dict[str, Any]) -> bool:
    """Current documents, not drafts (``preliminary``: a note or summary the clinician has not
    signed yet) nor ones entered in error."""
    return doc.get("status") == "current" and doc.get("docStatus") not in ("entered-in-error", "preliminary")


async def documents(rec: Records, patient_id: str, *, limit: int = 50) -> list[Document]:
    """The patient's current documents, newest first."""
    page = await rec.search(
        "DocumentReference",
        [("patient", f"Patient/{patient_id}"), ("status", "current"), ("_sort", "-date"), ("_count", str(limit)),
         ("_include", "DocumentReference:author")],
    )  # fmt: skip
    return [_brief(d, page.included) for d in page.resources if _listed(d)]


async def _attachment_bytes(rec: Records, attachment: dict[str, Any]) -> bytes | None:
    data = attachment.get("data")
    url = str(attachment.get("url") or "")
    if not data and url.startswith("Binary/"):
        binary = await service(rec).read("Binary", url.removeprefix("Binary/"))  # the document was theirs
        data = (binary or {}).get("data")
    if not data:
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


async def document(rec: Records, doc_id: str) -> Document | None:
    """One document the reader may see, with its content; None when missing or not theirs."""
    doc = await rec.read("DocumentReference", doc_id)
    if doc is None or not _listed(doc):
        return None
    authors: dict[str, dict[str, Any]] = {}
    for ref in doc.get("author") or []:
        reference = ref.get("reference", "")
        if reference.startswith(("Practitioner/", "PractitionerRole/", "Organization/")):
            found = await rec.read(*reference.split("/", 1))
            if found:
                authors[reference] = found
    brief = _brief(doc, authors)
    for content in doc.get("content") or []:
        attachment = content.get("attachment") or {}
        ctype = str(attachment.get("contentType", "")).split(";")[0].strip().lower()
        if ctype.startswith("text/") or ctype == "application/pdf":
            raw = await _attachment_bytes(rec, attachment)
            if raw is None:
                continue
            if ctype == "application/pdf":
                return replace(brief, content_type=ctype, original_pdf=raw)
            text = raw.decode("utf-8", "replace")
            if len(text) > MAX_TEXT:
                text = text[:MAX_TEXT] + "\n…"
            return replace(brief, content_type=ctype, text=text)
    return brief


def as_pdf(doc: Document, patient: str) -> bytes:
    if doc.original_pdf is not None:
        return doc.original_pdf
    rows = [(_("Patient"), patient), (_("Date"), i18n.date_text(doc.date))]
    if doc.author:
        rows.append((_("Written by"), doc.author))
    if doc.kind:
        rows.append((_("Kind"), doc.kind))
    return pdf.document(
        doc.title,
        [pdf.Section(pairs=rows), pdf.Section(text=doc.text or _("This document has no text to show."))],
        author=doc.author,
    )


# -- pages ----------------------------------------------------------------------------------------


def _not_found(request: Request) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("We could not find that document."), back="/portal/documents")  # fmt: skip


@router.get("/portal/record")
async def record_page(request: Request) -> Response:
    # Patients and proxies: the chosen patient's problems, medications, allergies, immunizations.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        s = await summary(rec, actor.patient_id)
    return render(request, "portal/record.html", s=s)


@router.get("/portal/documents")
async def documents_page(request: Request) -> Response:
    # Patients and proxies: the chosen patient's visit summaries and notes.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        docs = await documents(rec, actor.patient_id)
    return render(request, "portal/documents.html", docs=docs)


@router.get("/portal/documents/{doc_id}.pdf")
async def document_pdf(request: Request, doc_id: str) -> Response:
    # Patients and proxies: one of the chosen patient's documents as a PDF (theirs only).
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        doc = await document(rec, doc_id)
        patient = person_name(await rec.read("Patient", actor.patient_id)) if doc else ""
    if doc is None or (doc.text is None and doc.original_pdf is None):
        return _not_found(request)
    return Response(as_pdf(doc, patient), media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="document-{doc.id}.pdf"', "Cache-Control": "no-store"})  # fmt: skip


@router.get("/portal/documents/{doc_id}")
async def document_page(request: Request, doc_id: str) -> Response:
    # Patients and proxies: one of the chosen patient's documents, read in the page (theirs only).
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        doc = await document(rec, doc_id)
    if doc is None:
        return _not_found(request)
    return render(request, "portal/document.html", doc=doc, patient_name="", pdf_href=f"/portal/documents/{doc.id}.pdf",
                  back_href="/portal/documents", back_label=_("All visit summaries and notes"))  # fmt: skip


def install(app: FastAPI) -> None:
    app.include_router(router)
