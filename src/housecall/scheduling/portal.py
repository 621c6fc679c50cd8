"""The portal's appointment pages: the list, booking from real availability, the appointment's own
page (move, cancel within the policy, add to calendar), and the home page's upcoming visits.

Every route is for patients and proxies (policy PORTAL) and sits behind the CSRF guard; the patient
is the session's (``portal_actor``), never the URL's: an appointment of anyone else answers 404.
Booking is three plain GET steps (kind of visit, clinician, time) ending in one POST, so it works
without script.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from housecall.core.settings import Settings
from housecall.identity import service as identity
from housecall.identity.clock import clock
from housecall.portal import home
from housecall.portal.views import portal_actor
from housecall.scheduling import ics, model, service
from housecall.scheduling.display import Names
from housecall.visits import before, forms
from housecall.web import csrf, i18n, records
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render
from housecall.web.records import Records

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
WEEKS_SHOWN = 1


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _now() -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now(), dt.UTC)


def not_found(request: Request) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("There is no such appointment."), back="/portal/appointments")  # fmt: skip


@router.get("/portal/appointments")
async def appointments_page(request: Request) -> Response:
    # Patients and proxies: the chosen patient's upcoming and past appointments.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        visits = await service.visits_of_patient(rec, actor.patient_id)
        names = Names(rec)
        await names.prefetch(visits)
        now = _now()
        upcoming = [await names.shown(v) for v in visits if v.end >= now and v.booked]
        past = [await names.shown(v) for v in reversed(visits) if not (v.end >= now and v.booked)]
    return render(request, "scheduling/appointments.html", upcoming=upcoming, past=past,
                  tz=_settings(request).clinic_timezone)  # fmt: skip


def _int(value: str, default: int, low: int, high: int) -> int:
    return max(low, min(high, int(value))) if value.lstrip("-").isdigit() else default


async def _week_of_slots(
    rec: Records, settings: Settings, role_ids: list[str], week: int, kind: dict[str, Any] | None = None
) -> tuple[list[tuple[dt.date, list[model.Opening]]], bool]:
    """Free slots of one week from now (``week`` weeks ahead), grouped by the clinic's days, and
    whether the booking horizon goes on after it."""
    now = _now()
    horizon = now + dt.timedelta(days=settings.booking_horizon_days)
    start = now + dt.timedelta(days=7 * week)
    end = min(start + dt.timedelta(days=7), horizon)
    found = await service.slots(rec, role_ids, start, end, status="free") if start < horizon else []
    days: dict[dt.date, list[model.Opening]] = {}
    zone = ZoneInfo(settings.clinic_timezone)
    for o in found:
        if o.start > now and (kind is None or model.fits(o, kind)):
            days.setdefault(o.start.astimezone(zone).date(), []).append(o)
    return sorted(days.items()), end < horizon


@router.get("/portal/appointments/book")
async def book_page(
    request: Request, service_id: str = "", role: str = "", week: str = "0", state: str = ""
) -> Response:
    # Patients and proxies: choose a kind of visit and where they will be, a clinician who offers
    # it (licensed there for video and phone), then a free time.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _book_page(request, actor, service_id, role, _int(week, 0, 0, 52), state=state[:2].upper())


def _licensed_only(
    days: list[tuple[dt.date, list[model.Opening]]], who: service.Clinician, where: str | None
) -> list[tuple[dt.date, list[model.Opening]]]:
    """The free times that may be booked where the patient will be: video and phone times only
    when the clinician is licensed in that state; in-person times always."""
    licensed = where is not None and where in who.states
    kept = [(d, [o for o in day if licensed or o.mode == model.IN_PERSON]) for d, day in days]
    return [(d, day) for d, day in kept if day]


async def _book_page(
    request: Request, actor: Any, service_id: str, role: str, week: int,
    errors: FormErrors | None = None, status: int = 200, state: str = "", values: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    settings = _settings(request)
    async with records.reading(request, actor) as rec:
        services = await service.bookable_services(rec)
        chosen = next((s for s in services if s["id"] == service_id), None)
        home_state = before.home_state(await rec.read("Patient", str(actor.patient_id)))
        where = state if state in before.STATES else home_state
        people = await service.clinicians_for(rec, chosen["id"]) if chosen else []
        who = next((c for c in people if c.role_id == role), None)
        days, more = (
            await _week_of_slots(rec, settings, [who.role_id], week, chosen)
            if who and chosen
            else ([], False)
        )
        if who:
            days = _licensed_only(days, who, where)
        names = Names(rec)
        places = {o.id: await names.place(o.mode, o.location) for _d, day in days for o in day}
    licensed = [c for c in people if where and where in c.states]
    in_person_only = [c for c in people if c not in licensed]
    return render(request, "scheduling/book.html", status=status, services=services, chosen=chosen,
                  people=people, licensed=licensed, in_person_only=in_person_only, who=who, days=days, more=more,
                  week=week, places=places, tz=settings.clinic_timezone, service_name=model.service_name,
                  mode_label=model.mode_label, errors=errors or FormErrors(), states=before.STATES, where=where or "",
                  where_name=before.STATES.get(where or "", ""), home_state=home_state,
                  languages=before.language_choices(), values=values or {})  # fmt: skip


@router.post("/portal/appointments/book")
async def book(request: Request) -> Response:
    # Patients and proxies, CSRF-checked: book the chosen free slot for the session's patient.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    form = await request.form()
    service_id, role, slot, state, interpreter = (
        str(form.get(k) or "")[:64] for k in ("service_id", "role", "slot", "state", "interpreter"))  # fmt: skip
    values = {"interpreter": interpreter}
    if not slot:
        errors = FormErrors()
        errors.add("slot", _("Choose a time."))
        return await _book_page(request, actor, service_id, role, 0, errors, 400, state=state, values=values)
    try:
        async with records.writing(request, actor) as rec:
            v = await service.book(rec, _settings(request), patient_id=actor.patient_id, slot_id=slot,
                                   role_id=role, service_id=service_id, state=state or None,
                                   interpreter=interpreter or None)  # fmt: skip
    except service.SchedulingError as exc:
        errors = FormErrors()
        errors.add(exc.field, exc.message)
        return await _book_page(request, actor, service_id, role, 0, errors, 409, state=state, values=values)
    return RedirectResponse(f"/portal/appointments/{v.id}?done=booked", status_code=303)


async def _mine(rec: Records, actor: Any, appointment_id: str) -> model.Visit | None:
    v = await service.visit(rec, appointment_id[:64])
    return v if v is not None and v.patient == actor.patient_id else None


@router.get("/portal/appointments/{appointment_id}")
async def appointment_page(request: Request, appointment_id: str, done: str = "") -> Response:
    # Patients and proxies: one appointment of the session's patient (404 for anyone else's).
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    settings = _settings(request)
    async with records.reading(request, actor) as rec:
        v = await _mine(rec, actor, appointment_id)
        shown = await Names(rec).shown(v) if v else None
        appt = await rec.read("Appointment", v.id) if v else None
        visit_forms = await forms.forms_for(rec, appt) if appt else []
    if v is None or shown is None:
        return not_found(request)
    notices = {"booked": _("Your appointment is booked."), "moved": _("Your appointment has been moved."),
               "cancelled": _("Your appointment is cancelled.")}  # fmt: skip
    return render(request, "scheduling/appointment.html", a=shown, v=v, tz=settings.clinic_timezone,
                  can_change=service.may_change_online(v, settings), upcoming=v.booked and v.end >= _now(),
                  cutoff=settings.cancel_cutoff_hours, notice=notices.get(done), visit_forms=visit_forms,
                  interpreter=before.interpreter_of(appt))  # fmt: skip


@router.get("/portal/appointments/{appointment_id}/reschedule")
async def reschedule_page(request: Request, appointment_id: str, week: str = "0") -> Response:
    # Patients and proxies: free times of the same clinician to move the visit to.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _reschedule_page(request, actor, appointment_id, _int(week, 0, 0, 52))


async def _reschedule_page(
    request: Request, actor: Any, appointment_id: str, week: int, errors: FormErrors | None = None,
    status: int = 200,
) -> Response:  # fmt: skip
    settings = _settings(request)
    async with records.reading(request, actor) as rec:
        v = await _mine(rec, actor, appointment_id)
        if v is None:
            return not_found(request)
        names = Names(rec)
        shown = await names.shown(v)
        roles = await service.roles_of(rec, v.practitioner or "")
        days, more = await _week_of_slots(rec, settings, [r.role_id for r in roles], week)
        if roles:  # video and phone times only where the clinician may see the patient (0020)
            appt = await rec.read("Appointment", v.id) or {}
            where = before.planned_state(appt) or before.home_state(await rec.read("Patient", str(v.patient)))
            days = _licensed_only(days, roles[0], where)
        places = {o.id: await names.place(o.mode, o.location) for _d, day in days for o in day}
    return render(request, "scheduling/reschedule.html", status=status, a=shown, v=v, days=days, more=more,
                  week=week, places=places, tz=settings.clinic_timezone, mode_label=model.mode_label,
                  can_change=service.may_change_online(v, settings), errors=errors or FormErrors())  # fmt: skip


@router.post("/portal/appointments/{appointment_id}/reschedule")
async def reschedule(request: Request, appointment_id: str) -> Response:
    # Patients and proxies, CSRF-checked: move the session patient's visit to another free slot.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    slot = str(form.get("slot") or "")[:64]
    errors = FormErrors()
    if not slot:
        errors.add("slot", _("Choose a time."))
        return await _reschedule_page(request, actor, appointment_id, 0, errors, 400)
    try:
        async with records.writing(request, actor) as rec:
            v = await service.reschedule(rec, _settings(request), appointment_id[:64], slot,
                                         patient_id=actor.patient_id)  # fmt: skip
    except LookupError:
        return not_found(request)
    except service.SchedulingError as exc:
        errors.add(exc.field, exc.message)
        return await _reschedule_page(request, actor, appointment_id, 0, errors, 409)
    return RedirectResponse(f"/portal/appointments/{v.id}?done=moved", status_code=303)


@router.post("/portal/appointments/{appointment_id}/cancel")
async def cancel(request: Request, appointment_id: str) -> Response:
    # Patients and proxies, CSRF-checked: cancel the session patient's visit, until the cut-off.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    try:
        async with records.writing(request, actor) as rec:
            v = await service.cancel(rec, _settings(request), appointment_id[:64], patient_id=actor.patient_id,
                                     reason="Cancelled by the patient online")  # fmt: skip
    except LookupError:
        return not_found(request)
    except service.SchedulingError as exc:
        back = f"/portal/appointments/{appointment_id[:64]}"
        return render(request, "identity/error.html", status=409, title=_("Not possible online"),
                      message=exc.message, back=back)  # fmt: skip
    return RedirectResponse(f"/portal/appointments/{v.id}?done=cancelled", status_code=303)


@router.get("/portal/appointments/{appointment_id}/calendar.ics")
async def calendar_file(request: Request, appointment_id: str) -> Response:
    # Patients and proxies: the appointment as an iCalendar file (kind of visit and clinic only).
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    settings = _settings(request)
    async with records.reading(request, actor) as rec:
        v = await _mine(rec, actor, appointment_id)
        if v is None:
            return not_found(request)
        place = await Names(rec).place(v.mode, v.location)
        org = await identity.get_organization(rec.conn, actor.org_id)
    clinic = org.name if org else "Housecall"
    mode = model.mode_label(v.mode)
    summary = _("%(mode)s visit: %(service)s") % {"mode": mode, "service": v.service} if v.service \
        else _("%(mode)s visit") % {"mode": mode}  # fmt: skip
    where = clinic if v.mode != model.IN_PERSON else f"{place}, {clinic}"
    public = settings.public_url.rstrip("/")
    body = ics.calendar(v, summary=f"{summary} ({clinic})", clinic=where,
                        url=f"{public}/portal/appointments/{v.id}", host=public.split("://", 1)[-1].split("/")[0],
                        stamp=_now())  # fmt: skip
    return Response(body, media_type="text/calendar; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="appointment-{v.id}.ics"', "Cache-Control": "no-store"})  # fmt: skip


@home.provider
async def upcoming_visits(rec: Records, patient_id: str) -> list[home.Attention]:
    """The next booked visits on the portal's home page; video visits get a Join button (the
    visits feature opens the room from the appointment's page)."""
    settings: Settings = rec.ctx.settings
    now = _now()
    visits = [v for v in await service.visits_of_patient(rec, patient_id) if v.booked and v.end >= now][:3]
    names = Names(rec)
    out = []
    for v in visits:
        when = i18n.datetime_text(v.start, settings.clinic_timezone, "medium")
        who = await names.person("Practitioner", v.practitioner)
        text = _("%(mode)s visit with %(name)s, %(when)s") % {"mode": model.mode_label(v.mode), "name": who,
                                                                "when": when}  # fmt: skip
        out.append(home.Attention(text, f"/portal/appointments/{v.id}",
                                  action=_("Join") if v.mode in model.VIRTUAL_MODES else None))  # fmt: skip
    return out


def book_link(**params: str) -> str:
    return "/portal/appointments/book?" + urlencode({k: v for k, v in params.items() if v})
