"""Refill pages: the patient's medicines with a "Request a refill" form each, and the care team's
page that approves or denies a request (the inbox's ``refill`` work items).

Portal routes are for patients and proxies (PORTAL), the patient taken from the session; workspace
routes are for the care team (CLINICAL). All sit behind the CSRF guard and reach the store through
``web/records`` (``refills/service.py`` does the work).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Actor, ActorKind, Role
from housecall.portal import home
from housecall.portal.home import Attention
from housecall.portal.views import portal_actor
from housecall.refills import service
from housecall.web import csrf, records
from housecall.web.i18n import _, ngettext
from housecall.web.pages import FormErrors, render
from housecall.web.records import Records
from housecall.workspace import inbox
from housecall.workspace.inbox import person_name
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)


@inbox.item_page("refill")
def _refill_page(task: dict[str, Any]) -> str:
    return f"/workspace/refills/{task['id']}"


@home.provider
async def open_refills(rec: Records, patient_id: str) -> list[Attention]:
    n = await service.open_count(rec, patient_id)
    if not n:
        return []
    text = ngettext("%(n)s refill request is waiting for an answer",
                    "%(n)s refill requests are waiting for an answer", n) % {"n": n}  # fmt: skip
    return [Attention(text=text, path="/portal/medications", count=n)]


def _message(field: str, problem: str) -> str:
    messages = {
        ("medication", "unknown"): _("This medicine is not on your list any more."),
        ("medication", "open"): _("You have already asked for a refill of this medicine. "
                                  "Your care team will answer soon."),
        ("pharmacy", "missing"): _("Choose the pharmacy that should fill the prescription."),
        ("pharmacy_other", "missing"): _("Write the name and town of the pharmacy."),
        ("pharmacy_other", "long"): _("Keep the pharmacy's name under 200 characters."),
        ("note", "long"): _("Keep the note under 1000 characters."),
        ("pharmacy_note", "long"): _("Keep the note under 1000 characters."),
        ("reason", "missing"): _("Write the reason: the patient will read it."),
        ("reason", "long"): _("Keep the reason under 1000 characters."),
        ("refills", "range"): _("Enter a number of refills from 0 to 11."),
    }  # fmt: skip
    return messages.get((field, problem), _("Check this field."))


async def _medications_page(
    request: Request,
    actor: Actor,
    *,
    status: int = 200,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        meds = await service.medicines(rec, actor.patient_id)
        asked = await service.requests(rec, actor.patient_id)
        pharmacies = await service.pharmacies(rec)
    open_by_focus = {r.focus: r for r in asked if r.open}
    return render(request, "refills/medications.html", status=status, meds=meds, asked=asked,
                  open_by_focus=open_by_focus, pharmacies=pharmacies, errors=errors or FormErrors(),
                  values=values or {}, notice=notice)  # fmt: skip


@router.get("/portal/medications")
async def medications(request: Request, sent: str = "") -> Response:
    # Patients and proxies: the chosen patient's medicines and refill requests (session's patient).
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    notice = _("Your refill request was sent to your care team.") if sent else None
    return await _medications_page(request, actor, notice=notice)


@router.post("/portal/medications/refill")
async def request_refill(request: Request) -> Response:
    # Patients and proxies: ask for a refill of one of the session patient's own medicines.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}
    medicine = values.get("medication", "")
    try:
        async with records.writing(request, actor) as rec:
            await service.request_refill(rec, actor.patient_id, medicine, pharmacy=values.get("pharmacy", ""),
                                         other=values.get("pharmacy_other", ""), note=values.get("note", ""))  # fmt: skip
    except service.Invalid as exc:
        errors = FormErrors()
        key = "form" if exc.field == "medication" else f"{exc.field}-{_slug(medicine)}"
        errors.add(key, _message(exc.field, exc.message))
        return await _medications_page(request, actor, status=400, errors=errors, values=values)
    return RedirectResponse("/portal/medications?sent=1", status_code=303)


def _slug(ref: str) -> str:
    """A form's field-id suffix for one medicine (as the template makes it)."""
    return ref.replace("/", "-")


async def _refill_page_response(
    request: Request,
    actor: Actor,
    task_id: str,
    *,
    status: int = 200,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    async with records.reading(request, actor) as rec:
        found = await service.load(rec, task_id)
        if found is None:
            return _not_found(request)
        refill, _task, medicine = found
        patient = await rec.read("Patient", refill.patient_id)
        prescriber = None
        if medicine and (medicine.get("requester") or {}).get("reference", "").startswith("Practitioner/"):
            prescriber = await rec.read("Practitioner", medicine["requester"]["reference"].split("/", 1)[1])
    repeats = ((medicine or {}).get("dispenseRequest") or {}).get("numberOfRepeatsAllowed")
    values = {"refills": str(repeats if isinstance(repeats, int) else 0), **(values or {})}
    return render(request, "refills/decide.html", status=status, refill=refill, medicine=medicine,
                  how=service.instructions(medicine) if medicine else "", patient_name=person_name(patient),
                  prescriber=person_name(prescriber), errors=errors or FormErrors(), values=values,
                  can_prescribe=can_prescribe(actor))  # fmt: skip


def can_prescribe(actor: Actor) -> bool:
    """Only a prescriber approves a refill (it writes a prescription); any of the care team may
    deny one with a reason."""
    return actor.kind is ActorKind.PRACTITIONER or Role.CLINICIAN in actor.roles


def _not_found(request: Request) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("That item is not in your inbox."), back="/workspace")  # fmt: skip


def _conflict(request: Request, task_id: str) -> Response:
    return render(request, "identity/error.html", status=409, title=_("Someone else changed this"),
                  message=_("Another member of the team answered or changed this request while you were "
                            "looking."), back=f"/workspace/refills/{task_id}")  # fmt: skip


@router.get("/workspace/refills/{task_id}")
async def refill_page(request: Request, task_id: str) -> Response:
    # Care team only: one refill request of a patient the person may see, to approve or deny.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _refill_page_response(request, actor, task_id)


async def _decision(request: Request, task_id: str, action: str) -> Response:
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}
    version = values.get("version", "")
    if not version.isdigit() or not actor.fhir_user:
        return _conflict(request, task_id)
    if action == "approve" and not can_prescribe(actor):
        return render(request, "identity/error.html", status=403, title=_("Not available"),
                      message=_("Only a prescriber can approve a refill."), back=f"/workspace/refills/{task_id}")  # fmt: skip
    try:
        async with records.writing(request, actor) as rec:
            if action == "approve":
                await service.approve(rec, task_id, int(version), actor.fhir_user,
                                      refills=values.get("refills", ""), note=values.get("pharmacy_note", ""))  # fmt: skip
            else:
                await service.deny(
                    rec, task_id, int(version), actor.fhir_user, reason=values.get("reason", "")
                )
    except service.Invalid as exc:
        errors = FormErrors()
        errors.add(exc.field, _message(exc.field, exc.message))
        return await _refill_page_response(request, actor, task_id, status=400, errors=errors, values=values)
    except inbox.Conflict:
        return _conflict(request, task_id)
    except LookupError:
        return _not_found(request)
    return RedirectResponse(f"/workspace/refills/{task_id}", status_code=303)


@router.post("/workspace/refills/{task_id}/approve")
async def approve(request: Request, task_id: str) -> Response:
    # Care team only; CSRF-checked; approved only on the version the page showed.
    return await _decision(request, task_id, "approve")


@router.post("/workspace/refills/{task_id}/deny")
async def deny(request: Request, task_id: str) -> Response:
    # Care team only; CSRF-checked; a denial needs a reason, on the version the page showed.
    return await _decision(request, task_id, "deny")


def install(app: FastAPI) -> None:
    app.include_router(router)
