"""The staff side of scheduling: a clinician's day and week in the workspace, and the front desk's
schedule page (availability, blocked time, booking and cancelling for patients).

``/workspace/schedule`` is for the care team (policy CLINICAL): the signed-in clinician's own
Slots and Appointments; a booked visit shows the patient's name only when the access path lets the
clinician see that patient (their care team), otherwise just "Booked". ``/desk/…`` is for front
desk and organization administrators (policy FRONT_DESK), who work appointments for every patient
and write the calendars. All times are shown and entered in the clinic's time zone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Actor, ActorKind
from housecall.core.settings import Settings
from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.scheduling import model, service
from housecall.scheduling.display import Names, Shown
from housecall.scheduling.model import Opening
from housecall.visits import before
from housecall.web import csrf, nav, records
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render
from housecall.web.records import Records
from housecall.workspace.inbox import person_name
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _today(tz: str) -> dt.date:
    return dt.datetime.fromtimestamp(clock.now(), ZoneInfo(tz)).date()


def _day(value: str, tz: str) -> dt.date:
    if DAY.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    return _today(tz)


@dataclass(frozen=True)
class Row:
    """One line of a day: a Slot (free, booked or blocked) and the visit in it, if any."""

    start: dt.datetime
    end: dt.datetime
    slot: Opening | None
    visit: Shown | None

    @property
    def state(self) -> str:
        if self.visit is not None and self.visit.visit.booked:
            return "booked"
        if self.slot is None:
            return "other"
        return {"free": "free", "busy-unavailable": "blocked", "busy-tentative": "booked"}.get(
            self.slot.status, "booked"
        )


async def calendar(
    rec: Records, roles: list[service.Clinician], practitioner: str | None, first: dt.date, days: int, tz: str
) -> list[tuple[dt.date, list[Row]]]:
    """The days from ``first``: every Slot of the roles and every booked Appointment of the
    practitioner, by start, in the clinic's zone."""
    start, end = model.day_bounds(first, days, tz)
    openings = await service.slots(rec, [r.role_id for r in roles], start, end)
    visits = await service.visits_of_practitioner(rec, practitioner, start, end) if practitioner else []
    names = Names(rec)
    await names.prefetch(visits, with_patient=True)
    by_slot = {v.slot: v for v in visits if v.slot and v.booked}
    rows = []
    for o in openings:
        v = by_slot.pop(o.id, None)
        rows.append(Row(o.start, o.end, o, await names.shown(v, with_patient=True) if v else None))
    for v in visits:
        if v.booked and (not v.slot or v.slot in by_slot):
            rows.append(Row(v.start, v.end, None, await names.shown(v, with_patient=True)))
    zone = ZoneInfo(tz)
    out: dict[dt.date, list[Row]] = {first + dt.timedelta(days=n): [] for n in range(days)}
    for row in sorted(rows, key=lambda r: r.start):
        out.setdefault(row.start.astimezone(zone).date(), []).append(row)
    return sorted(out.items())


def _span(day: dt.date, view: str) -> tuple[dt.date, int]:
    return (model.week_start(day), 7) if view == "week" else (day, 1)


# -- the clinician's own schedule -------------------------------------------------------------------


@router.get("/workspace/schedule")
async def my_schedule(request: Request, day: str = "", view: str = "day") -> Response:
    # Care team only: the signed-in clinician's own day or week.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    tz = _settings(request).clinic_timezone
    chosen, view = _day(day, tz), ("week" if view == "week" else "day")
    first, days = _span(chosen, view)
    practitioner = model.ref_id(actor.fhir_user, "Practitioner")
    async with records.reading(request, actor) as rec:
        roles = await service.roles_of(rec, practitioner) if practitioner else []
        cal = await calendar(rec, roles, practitioner, first, days, tz)
    return render(request, "scheduling/my_schedule.html", cal=cal, day=chosen, view=view, tz=tz,
                  has_roles=bool(roles), nav_days=_nav_days(chosen, view), base="/workspace/schedule",
                  params={}, mode_label=model.mode_label, desk=False)  # fmt: skip


def _nav_days(day: dt.date, view: str) -> dict[str, str]:
    step = dt.timedelta(days=7 if view == "week" else 1)
    return {"prev": (day - step).isoformat(), "next": (day + step).isoformat(), "day": day.isoformat()}


# -- the front desk -----------------------------------------------------------------------------------


def is_desk(actor: Actor) -> bool:
    return actor.kind is ActorKind.STAFF and bool(actor.roles & nav.DESK)


async def desk_actor(request: Request) -> Actor | Response:
    """The signed-in front desk or organization administrator, or the page saying this is not for them."""
    actor = await records.page_actor(request)
    if not is_desk(actor):
        return render(request, "identity/error.html", status=403, title=_("Not available"),
                      message=_("The front desk's pages are for the front desk."), back=nav.home_for(actor))  # fmt: skip
    return actor


def _back(role: str, day: str, view: str, **extra: str) -> str:
    params = {"role": role, "day": day, "view": view, **extra}
    return "/desk/schedule?" + urlencode({k: v for k, v in params.items() if v})


@router.get("/desk/schedule")
async def desk_schedule(request: Request, role: str = "", day: str = "", view: str = "day", done: str = "",
                        n: str = "") -> Response:  # fmt: skip
    # Front desk and organization admins: a clinician's day or week, availability, booking.
    actor = await desk_actor(request)
    if isinstance(actor, Response):
        return actor
    notices = {"added": _("%(n)s free times added.") % {"n": n if n.isdigit() else "0"},
               "booked": _("The appointment is booked."), "cancelled": _("The appointment is cancelled."),
               "blocked": _("The time is blocked."), "opened": _("The time is open for booking again.")}  # fmt: skip
    return await _desk_page(request, actor, role[:64], day, view, notice=notices.get(done))


async def _desk_page(
    request: Request, actor: Actor, role: str, day: str, view: str, *, notice: str | None = None,
    errors: FormErrors | None = None, values: dict[str, str] | None = None, status: int = 200,
) -> Response:  # fmt: skip
    settings = _settings(request)
    tz = settings.clinic_timezone
    chosen, view = _day(day, tz), ("week" if view == "week" else "day")
    first, days = _span(chosen, view)
    async with records.reading(request, actor) as rec:
        people = await service.clinicians(rec, [])
        who = next((c for c in people if c.role_id == role), None)
        cal = await calendar(rec, [who], who.practitioner_id, first, days, tz) if who else []
        names = Names(rec)
        locations = [(loc, str((await names.get("Location", loc) or {}).get("name") or loc))
                     for loc in (who.location_ids if who else ())]  # fmt: skip
        services = [(s, model.service_name(await names.get("HealthcareService", s)) or s)
                    for s in (who.service_ids if who else ())]  # fmt: skip
    vals = {"day": chosen.isoformat(), "start": "09:00", "end": "12:00", "minutes": "20", "mode": model.VIDEO,
            "location": "", "service_id": "",
            **(values or {})}  # fmt: skip
    return render(request, "scheduling/desk.html", status=status, people=people, who=who, cal=cal, day=chosen,
                  view=view, tz=tz, nav_days=_nav_days(chosen, view), base="/desk/schedule",
                  params={"role": who.role_id} if who else {}, mode_label=model.mode_label, modes=model.MODES,
                  locations=locations, services=services, notice=notice, errors=errors or FormErrors(),
                  values=vals, desk=True)  # fmt: skip


def _form_str(form: Any, name: str, limit: int = 64) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


@router.post("/desk/schedule/availability")
async def add_availability(request: Request) -> Response:
    # Front desk and organization admins, CSRF-checked: free Slots for a time range at a visit length.
    actor = await desk_actor(request)
    if isinstance(actor, Response):
        return actor
    settings = _settings(request)
    form = await request.form()
    values = {k: _form_str(form, k) for k in ("role", "day", "start", "end", "minutes", "mode", "location",
                                              "service_id", "view")}  # fmt: skip
    errors = FormErrors()
    day = None
    if DAY.match(values["day"]):
        with contextlib.suppress(ValueError):
            day = dt.date.fromisoformat(values["day"])
    if day is None:
        errors.add("day", _("Enter the day as YYYY-MM-DD."))
    for name in ("start", "end"):
        if not TIME.match(values[name]):
            errors.add(name, _("Enter the time as HH:MM (24-hour clock)."))
    if not values["minutes"].isdigit():
        errors.add("minutes", _("Enter the length of one visit in minutes."))
    made = 0
    if not errors:
        assert day is not None
        try:
            async with records.writing(request, actor) as rec:
                who = await service.clinician(rec, values["role"])
                if who is None:
                    raise service.SchedulingError(_("Choose a clinician."), "role")
                made = await service.add_availability(
                    rec, settings, who, day=day, start=dt.time.fromisoformat(values["start"]),
                    end=dt.time.fromisoformat(values["end"]), minutes=int(values["minutes"]), mode=values["mode"],
                    location_id=values["location"] or None, service_id=values["service_id"] or None,
                )  # fmt: skip
        except service.SchedulingError as exc:
            errors.add(exc.field, exc.message)
    if errors:
        return await _desk_page(request, actor, values["role"], values["day"], values["view"], errors=errors,
                                values=values, status=400)  # fmt: skip
    return RedirectResponse(_back(values["role"], values["day"], values["view"], done="added", n=str(made)),
                            status_code=303)  # fmt: skip


@router.post("/desk/slots/{slot_id}/{action}")
async def change_slot(request: Request, slot_id: str, action: str) -> Response:
    # Front desk and organization admins, CSRF-checked: block a free time or open a blocked one.
    actor = await desk_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    role, day, view, version = (_form_str(form, k) for k in ("role", "day", "view", "version"))
    if action not in ("block", "open") or not version.isdigit():
        return render(request, "identity/error.html", status=400, title=_("Not possible"),
                      message=_("That change cannot be made."), back=_back(role, day, view))  # fmt: skip
    try:
        async with records.writing(request, actor) as rec:
            await service.set_blocked(rec, slot_id[:64], int(version), action == "block")
    except LookupError:
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("There is no such time."), back=_back(role, day, view))  # fmt: skip
    except service.SchedulingError as exc:
        return render(request, "identity/error.html", status=409, title=_("Someone else changed this"),
                      message=exc.message, back=_back(role, day, view))  # fmt: skip
    return RedirectResponse(_back(role, day, view, done="blocked" if action == "block" else "opened"),
                            status_code=303)  # fmt: skip


async def _find_patients(rec: Records, q: str) -> list[dict[str, Any]]:
    """Patients by birth date (YYYY-MM-DD) or by name (any part), at most 20."""
    q = q.strip()[:100]
    if not q:
        return []
    query = [("birthdate", q)] if DAY.match(q) else [("name", q)]
    try:
        page = await rec.search("Patient", [*query, ("_count", "20")])
    except FhirError:  # a date that is no date: nothing found rather than an error page
        return []
    return list(page)


@router.get("/desk/book")
async def desk_book_page(request: Request, slot: str = "", role: str = "", q: str = "", day: str = "",
                         view: str = "day") -> Response:  # fmt: skip
    # Front desk and organization admins: find the patient (name or birth date) to book a free time for.
    actor = await desk_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _desk_book_page(request, actor, slot[:64], role[:64], q, day[:10], view)


async def _desk_book_page(
    request: Request, actor: Actor, slot: str, role: str, q: str, day: str, view: str,
    errors: FormErrors | None = None, status: int = 200, values: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    tz = _settings(request).clinic_timezone
    async with records.reading(request, actor) as rec:
        who = await service.clinician(rec, role) if role else None
        got = await rec.read("Slot", slot) if slot else None
        opening = model.opening_of(got) if got else None
        found = await _find_patients(rec, q)
        names = Names(rec)
        services = [(s, model.service_name(await names.get("HealthcareService", s)) or s)
                    for s in (who.service_ids if who else ())]  # fmt: skip
    if who is None or opening is None:
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("There is no such time."), back=_back(role, day, view))  # fmt: skip
    virtual = opening.mode != model.IN_PERSON
    patients = []
    for p in found:
        home = before.home_state(p)
        patients.append({"id": p["id"], "name": person_name(p), "birth": p.get("birthDate", ""),
                         "state": before.STATES.get(home or "", ""),
                         "unlicensed": virtual and home is not None and home not in who.states})  # fmt: skip
    return render(request, "scheduling/desk_book.html", status=status, who=who, o=opening, q=q, patients=patients,
                  services=services, tz=tz, day=day, view=view, mode_label=model.mode_label,
                  errors=errors or FormErrors(), searched=bool(q.strip()), virtual=virtual, states=before.STATES,
                  licensed_in=", ".join(before.STATES[s] for s in sorted(who.states)),
                  languages=before.language_choices(), values=values or {})  # fmt: skip


@router.post("/desk/book")
async def desk_book(request: Request) -> Response:
    # Front desk and organization admins, CSRF-checked: book a free time for the chosen patient.
    actor = await desk_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    slot, role, patient, service_id, q, day, view, state, interpreter = (
        _form_str(form, k, 100)
        for k in ("slot", "role", "patient", "service_id", "q", "day", "view", "state", "interpreter"))  # fmt: skip
    values = {"state": state, "interpreter": interpreter, "patient": patient}
    errors = FormErrors()
    if not patient:
        errors.add("patient", _("Choose the patient."))
    if not service_id:
        errors.add("service", _("Choose a kind of visit."))
    if not errors:
        try:
            async with records.writing(request, actor) as rec:
                if await rec.read("Patient", patient) is None:
                    raise service.SchedulingError(_("Choose the patient."), "patient")
                await service.book(rec, _settings(request), patient_id=patient, slot_id=slot, role_id=role,
                                   service_id=service_id, state=state or None,
                                   interpreter=interpreter or None)  # fmt: skip
        except service.SchedulingError as exc:
            errors.add("state" if exc.field == "role" else exc.field, exc.message)  # licensure: by the state
    if errors:
        return await _desk_book_page(request, actor, slot, role, q, day, view, errors, 409, values)
    return RedirectResponse(_back(role, day, view, done="booked"), status_code=303)


@router.post("/desk/appointments/{appointment_id}/cancel")
async def desk_cancel(request: Request, appointment_id: str) -> Response:
    # Front desk and organization admins, CSRF-checked: cancel a visit for a patient (any time).
    actor = await desk_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    role, day, view = (_form_str(form, k) for k in ("role", "day", "view"))
    try:
        async with records.writing(request, actor) as rec:
            await service.cancel(rec, _settings(request), appointment_id[:64], patient_id=None,
                                 reason="Cancelled by the clinic")  # fmt: skip
    except LookupError:
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("There is no such appointment."), back=_back(role, day, view))  # fmt: skip
    except service.SchedulingError as exc:
        return render(request, "identity/error.html", status=409, title=_("Not possible"),
                      message=exc.message, back=_back(role, day, view))  # fmt: skip
    return RedirectResponse(_back(role, day, view, done="cancelled"), status_code=303)
