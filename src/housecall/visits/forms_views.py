"""Pages before a virtual visit (docs/decisions/0020): the forms sent ahead (patients and proxies),
the answers for the care team, and the help for joining a video visit.

The forms are plain server-rendered pages that work without script: every question is on the
page, the server decides which apply (``enableWhen``), checks them and shows each error beside
its field with everything typed kept; ``forms.js`` only hides the questions that do not apply.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.identity.clock import clock
from housecall.portal import home
from housecall.portal.views import portal_actor
from housecall.visits import before, forms, service
from housecall.web import csrf, i18n, pages, records
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render
from housecall.web.records import Records
from housecall.workspace.inbox import person_name

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
TZ = "America/New_York"  # the clinic's zone, as on the visit pages
HELP = "/help/visits"

# The visit and waiting-room templates show an interpreter request from the Appointment itself.
pages.env.globals["interpreter_of"] = before.interpreter_of


def _not_found(request: Request, back: str = "/portal/appointments") -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("There is no such appointment."), back=back)  # fmt: skip


async def _appointment(rec: Records, actor: Any, appointment_id: str) -> dict[str, Any] | None:
    """The session patient's own Appointment (None for anyone else's or an unknown id)."""
    appt = await rec.read("Appointment", appointment_id[:64])
    return appt if appt is not None and forms.patient_of(appt) == actor.patient_id else None


@router.get("/portal/appointments/{appointment_id}/forms")
async def forms_page(request: Request, appointment_id: str) -> Response:
    # Patients and proxies: the forms of the session patient's visit, done or to do.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        appt = await _appointment(rec, actor, appointment_id)
        found = await forms.forms_for(rec, appt) if appt else []
    if appt is None:
        return _not_found(request)
    return render(request, "visits/forms.html", appt=appt, forms=found, tz=TZ, help=HELP,
                  start=service.parse_time(appt.get("start")),
                  notice=_("Thank you: your answers are saved.") if request.query_params.get("done") else None)  # fmt: skip


async def _form_page(
    request: Request, actor: Any, appointment_id: str, slug: str, values: dict[str, str] | None = None,
    errors: FormErrors | None = None, status: int = 200,
) -> Response:  # fmt: skip
    async with records.reading(request, actor) as rec:
        appt = await _appointment(rec, actor, appointment_id)
        found = await forms.forms_for(rec, appt) if appt else []
    form = next((f for f in found if f.slug == slug), None)
    if appt is None or form is None:
        return _not_found(request)
    return render(request, "visits/forms_fill.html", status=status, appt=appt, form=form,
                  questions=forms.questions(form.questionnaire), values=values or forms.values_of(form.response),
                  errors=errors or FormErrors(), start=service.parse_time(appt.get("start")), tz=TZ)  # fmt: skip


@router.get("/portal/appointments/{appointment_id}/forms/{form}")
async def form_page(request: Request, appointment_id: str, form: str) -> Response:
    # Patients and proxies: one form of the session patient's visit, with the answers given so far.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _form_page(request, actor, appointment_id, form)


@router.post("/portal/appointments/{appointment_id}/forms/{form}")
async def form_submit(request: Request, appointment_id: str, form: str) -> Response:
    # Patients and proxies, CSRF-checked: the answers, checked on the server, stored as a
    # QuestionnaireResponse (and a Consent for the consent form) in the patient's record.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    posted = await request.form()
    values = {k: v[:2100] for k, v in posted.items() if isinstance(v, str) and k.startswith("q-")}
    async with records.writing(request, actor) as rec:
        appt = await _appointment(rec, actor, appointment_id)
        found = await forms.forms_for(rec, appt) if appt else []
        chosen = next((f for f in found if f.slug == form), None)
        if appt is None or chosen is None:
            return _not_found(request)
        qs = forms.questions(chosen.questionnaire)
        answers, problems = forms.read_answers(qs, values, consent=chosen.slug == forms.CONSENT)
        if not problems:
            await forms.ensure_questionnaires(rec.conn, rec.ctx.settings, actor.org_id)  # what was answered
            await forms.save(rec, chosen, qs, answers, appt)
    if problems:
        errors = FormErrors()
        for name, message in problems.items():
            errors.add(name, message)
        return await _form_page(request, actor, appointment_id, form, values, errors, 400)
    return RedirectResponse(f"/portal/appointments/{appt['id']}/forms?done=1", status_code=303)


# -- the care team -------------------------------------------------------------------------------------


@router.get("/visits/{appointment_id}/intake")
async def intake_page(request: Request, appointment_id: str) -> Response:
    # The visit's clinicians and care-team staff who may see the patient: the answers given ahead.
    actor = await records.page_actor(request)
    async with records.reading(request, actor) as rec:
        visit = await service.load_visit(rec, appointment_id)
        role = service.role_in(actor, visit) if visit else None
        if visit is None or role not in ("clinician", "staff"):
            return render(request, "identity/error.html", status=404, title=_("Not found"),
                          message=_("There is no such visit for you."), back="/")  # fmt: skip
        answered = await forms.answers_for(rec, visit.appointment)
        patient = await rec.read("Patient", str(visit.patient_id))
    return render(request, "visits/intake.html", visit=visit, answered=answered, patient_name=person_name(patient),
                  interpreter=before.interpreter_of(visit.appointment), tz=TZ,
                  planned=before.STATES.get(before.planned_state(visit.appointment) or "", ""))  # fmt: skip


# -- help for joining ---------------------------------------------------------------------------------


@router.get(HELP)
async def help_page(request: Request) -> Response:
    # Public: instructions only, no data (a family member helping may not have an account).
    return render(request, "visits/forms_help.html")


# -- the portal's home page ---------------------------------------------------------------------------


@home.provider
async def forms_due(rec: Records, patient_id: str) -> list[home.Attention]:
    """The "Forms to complete before your visit" line for each upcoming video or phone visit with forms
    still missing."""
    now = dt.datetime.fromtimestamp(clock.now(), dt.UTC)
    page = await rec.search("Appointment", [("patient", f"Patient/{patient_id}"), ("status", "booked"),
                                            ("date", "ge" + now.strftime("%Y-%m-%dT%H:%M:%SZ")),
                                            ("_sort", "date"), ("_count", "10")])  # fmt: skip
    out: list[home.Attention] = []
    virtual = [a for a in page if before.is_virtual(a)]
    if not virtual:
        return out
    known = await forms.active_questionnaires(rec)  # read once for all the visits listed
    consents = await forms.telehealth_consents(rec, patient_id)
    for appt in virtual:
        missing = [f for f in await forms.forms_for(rec, appt, known=known, consents=consents) if not f.done]
        start = service.parse_time(appt.get("start"))
        if missing and start:
            when = i18n.datetime_text(start, rec.ctx.settings.clinic_timezone, "medium")
            out.append(home.Attention(_("Forms to complete before your visit on %(when)s") % {"when": when},
                                      f"/portal/appointments/{appt['id']}/forms", count=len(missing),
                                      action=_("Fill in the forms"), urgent=True))  # fmt: skip
    return out


def install(app: FastAPI) -> None:
    app.include_router(router)
