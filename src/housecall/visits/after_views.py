"""The pages after a visit (docs/decisions/0019): the clinician's note and after-visit summary,
the list of ended visits to write up, and the patient's after-visit page (summary, follow-up to
book, rating and technical problems).

Every route sits behind the CSRF guard; who may do what comes from the person's role in the visit
(``visits.service.role_in``: the clinicians named on the Appointment write the note and summary,
the patient or proxy rates), never from the URL. What the pages show and store goes through
``web/records``.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Actor
from housecall.notify import Kind
from housecall.notify import service as notify_service
from housecall.portal.views import portal_actor
from housecall.scheduling import model as scheduling_model
from housecall.scheduling import service as scheduling
from housecall.scheduling.model import Opening
from housecall.scheduling.portal import book_link
from housecall.scheduling.service import Clinician
from housecall.visits import after, service
from housecall.visits.after import AfterError, Feedback, SummaryForm
from housecall.visits.service import Visit
from housecall.web import csrf, records
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render
from housecall.workspace.inbox import person_name
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
TZ = "America/New_York"  # as visits/views.py: the demo clinic's zone
RECENT_DAYS = 14  # ended visits listed for writing up
MESSAGES = {
    "conflict": lambda: _("Someone else changed this while you were editing. Here is their version; make your changes again."),
    "signed": lambda: _("This was already signed and cannot be changed here."),
    "not-ended": lambda: _("You can rate the visit once it has ended."),
    "already": lambda: _("You have already rated this visit. Thank you."),
    "no-encounter": lambda: _("The patient has not checked in yet."),
    "follow-up": lambda: _("This follow-up was booked already, or its clinician no longer offers this kind of visit."),
}  # fmt: skip


def _not_found(request: Request, back: str = "/") -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("There is no such visit for you."), back=back)  # fmt: skip


def _refused(request: Request, code: str, back: str, status: int = 409) -> Response:
    return render(request, "identity/error.html", status=status, title=_("Not possible"),
                  message=MESSAGES.get(code, MESSAGES["signed"])(), back=back)  # fmt: skip


async def _visit_for(rec: records.Records, actor: Actor, appointment_id: str) -> tuple[Visit, str] | None:
    visit = await service.load_visit(rec, appointment_id)
    if visit is None:
        return None
    role = service.role_in(actor, visit)
    return (visit, role) if role else None


def _version(form: Any) -> int | None:
    raw = str(form.get("version") or "")
    return int(raw) if raw.isdigit() else None


# -- the list of ended visits ------------------------------------------------------------------------


@router.get("/workspace/visits/ended")
async def ended_page(request: Request) -> Response:
    # Care team: the virtual visits of the last two weeks the person may see, in progress or ended,
    # with whether the note and summary are written (the clinician's to-do after the call).
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    since = (service.now_dt() - dt.timedelta(days=RECENT_DAYS)).date().isoformat()
    async with records.reading(request, actor) as rec:
        page = await rec.search("Encounter", [
            ("class", f"{service.ACT_CODE}|VR"), ("status", "in-progress,finished"), ("date", f"ge{since}"),
            ("_include", "Encounter:appointment"), ("_include", "Encounter:subject"), ("_count", "100")])  # fmt: skip
        rows: list[dict[str, Any]] = []
        for enc in page.resources:
            appt = page.included.get(service._appointment_ref(enc))
            if appt is None:
                continue
            visit = Visit(appt, enc)
            docs = await after.documents(rec, visit)
            rating = after.rating_of(await after.feedback_of(rec, visit))
            rows.append({"visit": visit, "name": person_name(page.included.get(f"Patient/{visit.patient_id}")),
                         "note": docs.get(after.NOTE), "summary": docs.get(after.SUMMARY), "rating": rating,
                         "mine": actor.fhir_user in visit.practitioners})  # fmt: skip
    rows.sort(key=lambda r: r["visit"].start or service.now_dt(), reverse=True)
    return render(request, "visits/ended.html", rows=rows, tz=TZ, problems=after.TECH_PROBLEMS)


# -- the visit's after page ---------------------------------------------------------------------------


async def _follow_up_with(rec: records.Records, visit: Visit) -> tuple[dict[str, Any], Clinician] | None:
    """The kind of visit and the clinician's bookable role for a follow-up of this visit: the same
    service with the same clinician (None when that clinician no longer offers it)."""
    wanted = scheduling_model.service_of(visit.appointment)
    services = await scheduling.bookable_services(rec)
    chosen = next((s for s in services if scheduling_model.service_name(s) == wanted), None)
    if chosen is None:
        return None
    prac = (visit.practitioners or [""])[0].removeprefix("Practitioner/")
    people = await scheduling.clinicians_for(rec, chosen["id"])
    who = next((c for c in people if c.practitioner_id == prac), None)
    return (chosen, who) if who else None


def _window(request_: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    """The days the follow-up request asks for, from now at the earliest."""
    period = request_.get("occurrencePeriod") or {}
    start = service.parse_time(f"{period.get('start') or ''}T00:00:00Z")
    end = service.parse_time(f"{period.get('end') or ''}T23:59:59Z")
    if start is None or end is None:
        return None
    return max(start, service.now_dt()), end


async def _book_href(rec: records.Records, visit: Visit, request_: dict[str, Any]) -> str:
    """The portal's booking page for the follow-up: the same kind of visit with the same clinician,
    at the week the follow-up is due (as far as the booking page knows them)."""
    params: dict[str, str] = {}
    found = await _follow_up_with(rec, visit)
    if found:
        params["service_id"], params["role"] = found[0]["id"], found[1].role_id
    window = _window(request_)
    if window:
        params["week"] = str(min(52, max(0, (window[0] - service.now_dt()).days // 7)))
    return book_link(**params)


FOLLOW_UP_TIMES = 8  # free times offered to the clinician for booking a follow-up there and then


async def _follow_up_times(rec: records.Records, visit: Visit, request_: dict[str, Any]) -> list[Opening]:
    """Free times of the visit's clinician for the follow-up: the same kind of visit, inside the
    window the request names, the first few."""
    found, window = await _follow_up_with(rec, visit), _window(request_)
    if found is None or window is None:
        return []
    kind, who = found
    free = await scheduling.slots(rec, [who.role_id], *window, status="free")
    return [o for o in free if scheduling_model.fits(o, kind)][:FOLLOW_UP_TIMES]


@router.get("/visits/{appointment_id}/after")
async def after_page(request: Request, appointment_id: str) -> Response:
    # The visit's patient (or proxy), its clinicians and the care team: the patient sees the signed
    # summary, the follow-up to book and the rating form; the care team the state of the write-up.
    actor = await records.page_actor(request)
    async with records.reading(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None:
            return _not_found(request)
        visit, role = found
        docs = await after.documents(rec, visit)
        follow_ups = await after.follow_ups(rec, visit)
        feedback = await after.feedback_of(rec, visit)
        books = [(f, await _book_href(rec, visit, f)) for f in follow_ups] if role == "patient" else []
        times = (
            [(f, await _follow_up_times(rec, visit, f)) for f in follow_ups] if role == "clinician" else []
        )
    summary = docs.get(after.SUMMARY)
    if role == "patient" and summary and not summary.final:
        summary = None  # a draft is the clinician's until signed
    return _render_after(request, visit, role, docs=docs, summary=summary, books=books, feedback=feedback,
                         times=times, thanks=request.query_params.get("rated") == "1",
                         booked=request.query_params.get("booked") == "1")  # fmt: skip


def _render_after(request: Request, visit: Visit, role: str, *, docs: dict[str, after.Doc],
                  summary: after.Doc | None, books: list[tuple[dict[str, Any], str]],
                  feedback: dict[str, Any] | None, thanks: bool = False, errors: FormErrors | None = None,
                  values: dict[str, Any] | None = None, status: int = 200,
                  times: list[tuple[dict[str, Any], list[Opening]]] | None = None,
                  booked: bool = False) -> Response:  # fmt: skip
    rating = after.rating_of(feedback)
    summary_text = _attachment_text(summary.resource) if summary is not None else ""
    return render(request, "visits/after.html", status=status, visit=visit, role=role, note=docs.get(after.NOTE),
                  summary=summary, summary_text=summary_text, books=books, feedback=feedback, rating=rating,
                  problems=after.TECH_PROBLEMS, thanks=thanks, errors=errors or FormErrors(),
                  values=values or {"problems": []}, tz=TZ, times=times or [], booked=booked)  # fmt: skip


def _attachment_text(doc: dict[str, Any]) -> str:
    for content in doc.get("content") or []:
        attachment = content.get("attachment") or {}
        if str(attachment.get("contentType", "")).startswith("text/plain") and attachment.get("data"):
            return base64.b64decode(attachment["data"]).decode("utf-8", "replace")
    return ""


@router.post("/visits/{appointment_id}/feedback")
async def feedback(request: Request, appointment_id: str) -> Response:
    # The visit's patient or proxy, once the visit ended: a rating, a comment, technical problems
    # (which open a Task for the care team).
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    raw = str(form.get("rating") or "")
    fb = Feedback(rating=int(raw) if raw.isdigit() else None, comment=str(form.get("comment") or "")[:2000],
                  problems=[str(p) for p in form.getlist("problems")])  # fmt: skip
    async with records.writing(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None or found[1] != "patient":
            return _not_found(request, "/portal")
        visit, role = found
        problems = after.check_feedback(fb)
        if problems:
            errors = FormErrors()
            if "rating" in problems:
                errors.add("rating", _("Choose a rating from 1 to 5."))
            if "problems" in problems:
                errors.add("problems", _("Choose from the problems listed."))
            docs = await after.documents(rec, visit)
            summary = docs.get(after.SUMMARY)
            return _render_after(request, visit, role, docs=docs, summary=summary if summary and summary.final else None,
                                 books=[], feedback=None, errors=errors, status=400,
                                 values={"rating": raw, "comment": fb.comment, "problems": fb.problems})  # fmt: skip
        try:
            await after.record_feedback(
                rec, visit, fb, author=actor.fhir_user or f"Patient/{visit.patient_id}"
            )
        except AfterError as exc:
            return _refused(request, exc.code, f"/visits/{appointment_id}/after")
    return RedirectResponse(f"/visits/{appointment_id}/after?rated=1", status_code=303)


@router.post("/visits/{appointment_id}/follow-up")
async def book_follow_up(request: Request, appointment_id: str) -> Response:
    # The visit's clinicians: book the follow-up the summary asked for at one of the free times
    # offered, for the patient; the request is then done and the new Appointment is based on it.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    request_id, slot_id = str(form.get("request") or "")[:64], str(form.get("slot") or "")[:64]
    try:
        async with records.writing(request, actor) as rec:  # a refusal below rolls it all back
            found = await _visit_for(rec, actor, appointment_id)
            if found is None or found[1] != "clinician":
                return _not_found(request, "/workspace/visits/ended")
            visit = found[0]
            asked = next((f for f in await after.follow_ups(rec, visit) if f["id"] == request_id), None)
            with_whom = await _follow_up_with(rec, visit)
            if asked is None or with_whom is None:
                return _refused(request, "follow-up", f"/visits/{appointment_id}/after")
            if not slot_id:
                raise scheduling.SchedulingError(_("Choose one of the times."), "slot")
            kind, who = with_whom
            # Clinicians do not keep the calendars (Slots are the front desk's): the booking is
            # Housecall's on her behalf, now that she is known to be the visit's clinician.
            await scheduling.book(rec.on_behalf(), request.app.state.settings, patient_id=str(visit.patient_id),
                                  slot_id=slot_id, role_id=who.role_id, service_id=kind["id"],
                                  state=visit.location_state, based_on=f"ServiceRequest/{request_id}")  # fmt: skip
            await rec.update({**asked, "status": "completed"})
    except scheduling.SchedulingError as exc:
        errors = FormErrors()
        errors.add("slot", exc.message)
        async with records.reading(request, actor) as rec:
            docs = await after.documents(rec, visit)
            times = [(f, await _follow_up_times(rec, visit, f)) for f in await after.follow_ups(rec, visit)]
            feedback_ = await after.feedback_of(rec, visit)
        return _render_after(request, visit, "clinician", docs=docs, summary=docs.get(after.SUMMARY), books=[],
                             feedback=feedback_, times=times, errors=errors, status=409)  # fmt: skip
    return RedirectResponse(f"/visits/{appointment_id}/after?booked=1", status_code=303)


# -- the note -----------------------------------------------------------------------------------------


async def _clinician_visit(request: Request, appointment_id: str, rec: records.Records,
                           actor: Actor) -> Visit | Response:  # fmt: skip
    found = await _visit_for(rec, actor, appointment_id)
    if found is None or found[1] != "clinician":
        return _not_found(request, "/workspace/visits/ended")
    visit = found[0]
    if visit.encounter is None:  # the record of the visit starts at check-in
        return _refused(request, "no-encounter", "/workspace/visits")
    return visit


def _note_page(request: Request, visit: Visit, note: after.Doc | None, *, values: dict[str, str] | None = None,
               errors: FormErrors | None = None, notice: str | None = None, status: int = 200) -> Response:  # fmt: skip
    sections = after.template_for(visit)
    if values is None:
        values = dict((note.fields.get("values") or {}) if note else {})
    version = note.version if note else ""
    return render(request, "visits/note.html", status=status, visit=visit, note=note, sections=sections,
                  labels=after.SECTIONS, values=values, version=version, errors=errors or FormErrors(),
                  notice=notice, tz=TZ, modes={"video": _("video"), "audio": _("audio-only"), "phone": _("phone"),
                                                "chat": _("chat")})  # fmt: skip


@router.get("/visits/{appointment_id}/note")
async def note_page(request: Request, appointment_id: str) -> Response:
    # The visit's clinicians, once the patient is admitted: the note from the visit type's template.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        visit = await _clinician_visit(request, appointment_id, rec, actor)
        if isinstance(visit, Response):
            return visit
        note = (await after.documents(rec, visit)).get(after.NOTE)
    saved = {"draft": _("The draft was saved."), "signed": _("The note was signed.")}
    return _note_page(request, visit, note, notice=saved.get(request.query_params.get("saved", "")))


@router.post("/visits/{appointment_id}/note")
async def note_save(request: Request, appointment_id: str) -> Response:
    # The visit's clinicians: save the draft or sign the note, on the version the form was read from.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    final = form.get("action") == "sign"
    async with records.writing(request, actor) as rec:
        visit = await _clinician_visit(request, appointment_id, rec, actor)
        if isinstance(visit, Response):
            return visit
        values = {k: str(form.get(k) or "") for k in after.template_for(visit)}
        try:
            await after.save_note(rec, visit, author=str(actor.fhir_user), values=values, final=final,
                                  version=_version(form))  # fmt: skip
        except AfterError as exc:
            note = (await after.documents(rec, visit)).get(after.NOTE)
            errors = FormErrors()
            if exc.code.startswith("missing:"):
                for key in exc.code.removeprefix("missing:").split(","):
                    errors.add(
                        key,
                        _("Write the %(section)s before signing.")
                        % {"section": _(after.SECTIONS[key][0]).lower()}
                        if final
                        else _("Write something first."),
                    )
                return _note_page(request, visit, note, values=values, errors=errors, status=400)
            if exc.code == "conflict" and note is not None:
                return _note_page(request, visit, note, errors=errors, status=409,
                                  notice=MESSAGES["conflict"]())  # fmt: skip
            return _refused(request, exc.code, f"/visits/{appointment_id}/note")
    return RedirectResponse(
        f"/visits/{appointment_id}/note?saved={'signed' if final else 'draft'}", status_code=303
    )


# -- the summary ----------------------------------------------------------------------------------------


SUMMARY_ERRORS = {
    ("diagnoses", "missing"): lambda: _("Pick or type at least one diagnosis before signing."),
    ("diagnoses", "unknown"): lambda: _("Pick diagnoses from the list, or type them below."),
    ("instructions", "missing"): lambda: _("Write what the patient should do before signing."),
    ("instructions", "empty"): lambda: _("Write something first."),
    ("follow_up_weeks", "unknown"): lambda: _("Choose when the follow-up should be."),
    ("other_diagnoses", "too-many"): lambda: _("At most 20 lines."),
    ("prescriptions", "too-many"): lambda: _("At most 20 lines."),
    ("orders", "too-many"): lambda: _("At most 20 lines."),
}


def _summary_form(form: Any) -> SummaryForm:
    weeks = str(form.get("follow_up_weeks") or "")
    return SummaryForm(
        diagnoses=[str(d) for d in form.getlist("diagnoses")],
        other_diagnoses=str(form.get("other_diagnoses") or "")[: after.TEXT_LIMIT],
        instructions=str(form.get("instructions") or "")[: after.TEXT_LIMIT],
        prescriptions=str(form.get("prescriptions") or "")[: after.TEXT_LIMIT],
        orders=str(form.get("orders") or "")[: after.TEXT_LIMIT],
        follow_up_weeks=int(weeks) if weeks.isdigit() else (-1 if weeks else None),
        follow_up_note=str(form.get("follow_up_note") or "")[:500],
    )


def _summary_page(request: Request, visit: Visit, summary: after.Doc | None, existing: list[str], *,
                  form: SummaryForm | None = None, errors: FormErrors | None = None, notice: str | None = None,
                  status: int = 200) -> Response:  # fmt: skip
    if form is None:
        form = SummaryForm.from_fields(summary.fields) if summary else SummaryForm()
    return render(request, "visits/summary.html", status=status, visit=visit, summary=summary, form=form,
                  existing=existing, common=after.COMMON_DIAGNOSES, weeks=after.FOLLOW_UP_WEEKS,
                  version=summary.version if summary else "", errors=errors or FormErrors(), notice=notice,
                  summary_text=_attachment_text(summary.resource) if summary else "", tz=TZ)  # fmt: skip


@router.get("/visits/{appointment_id}/summary")
async def summary_page(request: Request, appointment_id: str) -> Response:
    # The visit's clinicians: the after-visit summary (diagnoses, instructions, prescriptions and
    # orders, follow-up), a draft until signed.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        visit = await _clinician_visit(request, appointment_id, rec, actor)
        if isinstance(visit, Response):
            return visit
        summary = (await after.documents(rec, visit)).get(after.SUMMARY)
        existing = await after.existing_orders(rec, visit)
    saved = {"draft": _("The draft was saved."),
             "signed": _("The summary was signed and is in the patient's portal.")}  # fmt: skip
    return _summary_page(
        request, visit, summary, existing, notice=saved.get(request.query_params.get("saved", ""))
    )


@router.post("/visits/{appointment_id}/summary")
async def summary_save(request: Request, appointment_id: str) -> Response:
    # The visit's clinicians: save the draft or sign the summary. Signing stores the diagnoses,
    # prescriptions, orders and follow-up, tells the patient, and sends the summary to the
    # patient's primary care practitioner when that is someone else.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = _summary_form(await request.form())
    raw = await request.form()
    final = raw.get("action") == "sign"
    async with records.writing(request, actor) as rec:
        visit = await _clinician_visit(request, appointment_id, rec, actor)
        if isinstance(visit, Response):
            return visit
        problems = after.check_summary(form, final=final)
        if problems:
            errors = FormErrors()
            for name, code in problems.items():
                errors.add(name, SUMMARY_ERRORS[(name, code)]())
            summary = (await after.documents(rec, visit)).get(after.SUMMARY)
            return _summary_page(request, visit, summary, await after.existing_orders(rec, visit), form=form,
                                 errors=errors, status=400)  # fmt: skip
        try:
            doc = await after.save_summary(rec, visit, author=str(actor.fhir_user), form=form, final=final,
                                           version=_version(raw))  # fmt: skip
        except AfterError as exc:
            summary = (await after.documents(rec, visit)).get(after.SUMMARY)
            if exc.code == "conflict" and summary is not None:
                return _summary_page(request, visit, summary, await after.existing_orders(rec, visit),
                                     status=409, notice=MESSAGES["conflict"]())  # fmt: skip
            return _refused(request, exc.code, f"/visits/{appointment_id}/summary")
        if final:
            await after.share_with_primary_care(rec, visit, doc, author=str(actor.fhir_user))
            await notify_service.tell_patient(rec.conn, actor.org_id, str(visit.patient_id), Kind.RESULT_RELEASED,
                                              f"/visits/{appointment_id}/after", key=f"after-visit:{doc.id}")  # fmt: skip
    return RedirectResponse(f"/visits/{appointment_id}/summary?saved={'signed' if final else 'draft'}",
                            status_code=303)  # fmt: skip


def install(app: FastAPI) -> None:
    app.include_router(router)
