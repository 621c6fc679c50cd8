"""Booking, moving and cancelling visits; the front desk's availability; reminders.

Every change is made through ``web/records`` (the FHIR interactions, the access path and the audit
trail) inside the caller's one transaction, so a booking is the Slot set busy *and* the Appointment
created *and* its reminder jobs queued, or nothing at all:

- **One winner per slot.** The Slot is read with its version and updated only on that version
  (``If-Match``); the update locks the row (``FOR UPDATE`` on PostgreSQL, the one writer on
  SQLite), so of two people booking the same slot the second finds a newer version and is told
  the slot was just taken (``SlotTaken``), and its transaction writes nothing.
- **Patients book through this module only.** The access path lets patients read Slots and their
  Appointments but not write them over the FHIR API (a client could otherwise mark any slot busy,
  or book without one). ``booking_rights`` widens a patient's rights for the length of one of the
  calls below to exactly: update Slots, create/update Appointments *in their own record* (the
  access path still refuses an Appointment naming another patient). The audit trail names the
  patient as the one who wrote.
- **Reminders** are jobs (``core/jobs``) queued with the booking, one per configured offset
  (``HOUSECALL_REMINDER_HOURS``), keyed by appointment, start and offset. The job reads the
  Appointment when it runs and sends nothing unless it is still booked at the same start, so a
  visit that was moved or cancelled never gets a stale reminder.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from housecall import notify
from housecall.access.actor import ActorKind
from housecall.access.policy import Access
from housecall.core import jobs
from housecall.core.db import Conn
from housecall.core.settings import Settings
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.identity.service import accounts_for_patient
from housecall.scheduling import model
from housecall.scheduling.model import Opening, Visit
from housecall.visits import before, forms
from housecall.web.i18n import _
from housecall.web.records import Records
from housecall.workspace.inbox import person_name

log = logging.getLogger(__name__)

REMIND = "appointment.remind"
US = 1_000_000


class SchedulingError(Exception):
    """A booking, move or cancellation that cannot be made; ``message`` is shown to the person."""

    def __init__(self, message: str, field: str = "form") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class SlotTaken(SchedulingError):
    """Someone else booked (or the desk blocked) the slot first."""


class TooLate(SchedulingError):
    """Inside the cancellation window: the patient has to call the clinic."""


# -- rights ---------------------------------------------------------------------------------------


class _BookingAccess(Access):
    """A patient's or proxy's access, plus writing Slots and their own Appointments (see above)."""

    def _role_allows(self, res_type: str, code: str) -> bool:
        if self.actor.kind in (ActorKind.PATIENT, ActorKind.PROXY) and (
            (res_type == "Appointment" and code in "cu") or (res_type == "Slot" and code == "u")
        ):
            return True
        return super()._role_allows(res_type, code)


@contextmanager
def booking_rights(rec: Records) -> Iterator[None]:
    """For the block: the patient's access with the booking rights added (staff: unchanged)."""
    old = rec.ctx.access
    if old.actor.kind not in (ActorKind.PATIENT, ActorKind.PROXY):
        yield
        return
    rec.ctx.access = _BookingAccess(old.actor, old.grants)
    try:
        yield
    finally:
        rec.ctx.access = old


# -- the directory: services, clinicians, slots ---------------------------------------------------


@dataclass(frozen=True)
class Clinician:
    role_id: str
    practitioner_id: str
    name: str
    location_ids: tuple[str, ...]
    service_ids: tuple[str, ...]
    states: frozenset[str] = frozenset()  # US states of the licences current today (video, phone)


async def bookable_services(rec: Records) -> list[dict[str, Any]]:
    """HealthcareServices patients book visits for (active, ``appointmentRequired`` true)."""
    page = await rec.search("HealthcareService", [("active", "true"), ("_count", "100"), ("_sort", "name")])
    return [s for s in page if s.get("appointmentRequired") is True]


def _clinician(role: dict[str, Any], practitioners: dict[str, dict[str, Any]]) -> Clinician | None:
    prac = model.ref_id((role.get("practitioner") or {}).get("reference"), "Practitioner")
    if prac is None:
        return None
    practitioner = practitioners.get(f"Practitioner/{prac}")
    return Clinician(
        role_id=role["id"],
        practitioner_id=prac,
        name=person_name(practitioner) or prac,
        states=frozenset(before.license_states(practitioner or {}, _now().date())),
        location_ids=tuple(
            x
            for x in (model.ref_id(loc.get("reference"), "Location") for loc in role.get("location") or [])
            if x
        ),
        service_ids=tuple(
            x
            for x in (
                model.ref_id(s.get("reference"), "HealthcareService")
                for s in role.get("healthcareService") or []
            )
            if x
        ),
    )


async def clinicians(rec: Records, query: list[tuple[str, str]]) -> list[Clinician]:
    page = await rec.search(
        "PractitionerRole",
        [("active", "true"), *query, ("_include", "PractitionerRole:practitioner"), ("_count", "200")],
    )
    out = [c for c in (_clinician(r, page.included) for r in page) if c is not None]
    return sorted(out, key=lambda c: c.name)


async def clinicians_for(rec: Records, service_id: str) -> list[Clinician]:
    """Clinicians whose PractitionerRole offers the service."""
    return await clinicians(rec, [("service", f"HealthcareService/{service_id}")])


async def clinician(rec: Records, role_id: str) -> Clinician | None:
    role = await rec.read("PractitionerRole", role_id)
    if role is None or role.get("active") is False:
        return None
    prac_ref = (role.get("practitioner") or {}).get("reference")
    prac = await rec.read("Practitioner", prac_ref.split("/", 1)[1]) if prac_ref else None
    return _clinician(role, {prac_ref: prac} if prac_ref and prac else {})


async def slots(
    rec: Records, role_ids: list[str], start: dt.datetime, end: dt.datetime, *, status: str | None = None
) -> list[Opening]:
    """The Slots of the roles' Schedules starting in [start, end), by start."""
    if not role_ids:
        return []
    query = [
        ("schedule.actor", ",".join(f"PractitionerRole/{r}" for r in role_ids)),
        ("start", "ge" + model.iso_utc(start)),
        ("start", "lt" + model.iso_utc(end)),
        ("_sort", "start"),
        ("_count", "500"),
    ]
    if status:
        query.append(("status", status))
    return [model.opening_of(s) for s in await rec.search("Slot", query)]


async def _slot_of(
    rec: Records, slot_id: str, roles: list[Clinician]
) -> tuple[dict[str, Any], int, Clinician]:
    """The Slot with its version and the role whose Schedule it is in, if it is one of ``roles``'
    slots (found by a chained search: patients may not read Schedules); else not available."""
    for who in roles:
        found = await rec.search(
            "Slot", [("_id", slot_id), ("schedule.actor", f"PractitionerRole/{who.role_id}")]
        )
        if len(found) == 1:
            got = await rec.read_versioned("Slot", slot_id)
            if got is not None:
                return got[0], got[1], who
    raise SlotTaken(_("That time is no longer available. Please choose another."), "slot")


def _now() -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now(), dt.UTC)


async def _take(rec: Records, slot: dict[str, Any], version: int) -> None:
    """Set the Slot busy on the version read; someone else's change first is ``SlotTaken``."""
    if slot.get("status") != "free" or model.parse_instant(slot["start"]) <= _now():
        raise SlotTaken(_("That time is no longer available. Please choose another."), "slot")
    try:
        await rec.update({**slot, "status": "busy"}, version=version)
    except FhirError as exc:
        if exc.status == 412:
            raise SlotTaken(
                _("Someone else has just booked that time. Please choose another."), "slot"
            ) from exc
        raise


async def _release(rec: Records, slot_id: str | None) -> None:
    """Make a booked Slot free again (a Slot blocked meanwhile stays blocked)."""
    if not slot_id:
        return
    got = await rec.read_versioned("Slot", slot_id)
    if got is None or got[0].get("status") != "busy":
        return
    await rec.update({**got[0], "status": "free"}, version=got[1])


async def _location_for(rec: Records, opening: Opening, who: Clinician) -> str | None:
    """Where the visit happens: the Slot's own Location, else for an in-person visit the role's
    first building and for a video visit its virtual Location; a phone or chat visit is nowhere."""
    if opening.location:
        return opening.location
    if opening.mode in (model.PHONE, model.CHAT):
        return None
    for loc_id in who.location_ids:
        loc = await rec.read("Location", loc_id)
        if loc is None:
            continue
        virtual = loc.get("mode") == "kind" or any(
            c.get("code") == "vi" for c in (loc.get("physicalType") or {}).get("coding") or []
        )
        if virtual == (opening.mode == model.VIDEO):
            return loc_id
    return None


# -- booking, moving, cancelling ------------------------------------------------------------------


async def book(
    rec: Records, settings: Settings, *, patient_id: str, slot_id: str, role_id: str, service_id: str,
    state: str | None = None, interpreter: str | None = None, based_on: str | None = None,
) -> Visit:  # fmt: skip
    """Book the slot for the patient: the Slot busy, the Appointment booked, reminders queued.

    A video or phone visit needs the clinician licensed in the state the patient will be in
    (``state``, else the patient's home address): the same rule the booking page applies when it
    lists clinicians and times, checked here again so that no crafted request gets round it.
    ``interpreter`` (a language code of ``before.LANGUAGES``) asks for an interpreter;
    ``based_on`` names the request the visit fulfils (a follow-up's ServiceRequest)."""
    who = await clinician(rec, role_id)
    if who is None or service_id not in who.service_ids:
        raise SchedulingError(_("Choose a clinician who offers this kind of visit."), "role")
    service = await rec.read("HealthcareService", service_id)
    if service is None:
        raise SchedulingError(_("Choose a kind of visit."), "service")
    with booking_rights(rec):
        slot, version, _who = await _slot_of(rec, slot_id, [who])
        opening = model.opening_of(slot)
        if not model.fits(opening, service):
            raise SlotTaken(_("That time is for another kind of visit. Please choose another."), "slot")
        where = None
        if opening.mode != model.IN_PERSON:
            where = await _licensed_where(rec, who, patient_id, state)
        if interpreter and interpreter not in before.LANGUAGES:
            raise SchedulingError(_("Choose a language from the list."), "interpreter")
        await _take(rec, slot, version)
        location = await _location_for(rec, opening, who)
        participants = [
            {"actor": {"reference": f"Patient/{patient_id}"}, "required": "required", "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{who.practitioner_id}"}, "required": "required",
             "status": "accepted"},
        ]  # fmt: skip
        if location:
            participants.append(
                {"actor": {"reference": f"Location/{location}"}, "required": "required", "status": "accepted"}
            )
        appt: dict[str, Any] = {
            "resourceType": "Appointment",
            "status": "booked",
            "serviceType": [model.service_concept(service)],
            "appointmentType": model.mode_concept(opening.mode),
            "start": slot["start"],
            "end": slot["end"],
            "minutesDuration": int((opening.end - opening.start).total_seconds() // 60),
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "created": model.local_iso(_now(), settings.clinic_timezone),
            "participant": participants,
        }
        if service.get("category"):
            appt["serviceCategory"] = service["category"]
        if where:
            appt["extension"] = [before.planned_state_ext(where)]
        if interpreter:
            participants.append(before.interpreter_participant(interpreter))
        if based_on:
            appt["basedOn"] = [{"reference": based_on}]
        stored = await rec.create("Appointment", appt)
    visit = model.visit_of(stored)
    assert visit is not None
    await enqueue_reminders(rec.conn, rec.actor.org_id, visit, settings)
    if visit.mode != model.IN_PERSON:
        await forms.ensure_questionnaires(rec.conn, settings, rec.actor.org_id)  # the forms sent ahead
        await before.enqueue_form_reminders(rec.conn, rec.actor.org_id, visit)
    return visit


async def _licensed_where(rec: Records, who: Clinician, patient_id: str, state: str | None) -> str:
    """The state the patient will be in for a video or phone visit (chosen, else their home), if
    the clinician is licensed there; otherwise the booking is refused with a clear reason."""
    if state:
        if state not in before.STATES:
            raise SchedulingError(_("Choose the state you will be in during the visit."), "state")
        where: str | None = state
    else:
        where = before.home_state(await rec.read("Patient", patient_id))
    if where is None:
        raise SchedulingError(_("Choose the state you will be in during the visit."), "state")
    if where not in who.states:
        raise SchedulingError(
            _(
                "%(name)s is not licensed in %(state)s, so cannot see you by video or phone there. Choose a clinician licensed there, or an in-person visit."
            )
            % {"name": who.name, "state": before.STATES[where]},
            "role",
        )
    return where


async def visit(rec: Records, appointment_id: str) -> Visit | None:
    """The Appointment as a Visit, if the reader may see it."""
    got = await rec.read_versioned("Appointment", appointment_id)
    return model.visit_of(got[0], got[1]) if got else None


def may_change_online(v: Visit, settings: Settings) -> bool:
    """Whether a patient may still cancel or move the visit themself (the cut-off setting)."""
    return v.booked and v.start - _now() >= dt.timedelta(hours=settings.cancel_cutoff_hours)


async def _booked(rec: Records, appointment_id: str, patient_id: str | None) -> tuple[dict[str, Any], int]:
    got = await rec.read_versioned("Appointment", appointment_id)
    v = model.visit_of(got[0]) if got is not None else None
    if got is None or v is None or (patient_id is not None and v.patient != patient_id):
        raise LookupError(appointment_id)  # answered as an unknown appointment
    if got[0].get("status") != "booked":
        raise SchedulingError(_("This appointment is not booked any more."))
    return got


async def cancel(
    rec: Records, settings: Settings, appointment_id: str, *, patient_id: str | None, reason: str
) -> Visit:
    """Cancel a booked visit and free its slot. ``patient_id`` set: a patient (or proxy) is
    cancelling, and only until the cut-off; None: the clinic, at any time."""
    with booking_rights(rec):
        appt, version = await _booked(rec, appointment_id, patient_id)
        v = model.visit_of(appt, version)
        assert v is not None
        if patient_id is not None and not may_change_online(v, settings):
            raise TooLate(_("It is too late to cancel online. Please call the clinic."))
        try:
            stored = await rec.update(
                {**appt, "status": "cancelled", "cancelationReason": {"text": reason}}, version=version
            )
        except FhirError as exc:
            if exc.status == 412:
                raise SchedulingError(
                    _("This appointment was changed meanwhile. Please look at it again.")
                ) from exc
            raise
        await _release(rec, v.slot)
    out = model.visit_of(stored)
    assert out is not None
    return out


async def roles_of(rec: Records, practitioner_id: str) -> list[Clinician]:
    return await clinicians(rec, [("practitioner", f"Practitioner/{practitioner_id}")])


async def reschedule(
    rec: Records, settings: Settings, appointment_id: str, new_slot_id: str, *, patient_id: str | None
) -> Visit:
    """Move a booked visit to another free slot of the same clinician: the new Slot busy, the old
    one free, the Appointment's times and slot replaced, new reminders queued; one transaction."""
    with booking_rights(rec):
        appt, version = await _booked(rec, appointment_id, patient_id)
        v = model.visit_of(appt, version)
        assert v is not None
        if patient_id is not None and not may_change_online(v, settings):
            raise TooLate(_("It is too late to change this visit online. Please call the clinic."))
        roles = await roles_of(rec, v.practitioner or "")
        if not roles:
            raise SchedulingError(_("This clinician takes no bookings now. Please call the clinic."))
        slot, slot_version, who = await _slot_of(rec, new_slot_id, roles)
        if new_slot_id == v.slot:
            raise SlotTaken(_("That is the time you have already. Please choose another."), "slot")
        opening = model.opening_of(slot)
        if opening.mode != model.IN_PERSON and v.patient:
            await _licensed_where(rec, who, v.patient, before.planned_state(appt))
        await _take(rec, slot, slot_version)
        await _release(rec, v.slot)
        location = await _location_for(rec, opening, who)
        participants = [
            p for p in appt.get("participant") or []
            if not ((p.get("actor") or {}).get("reference") or "").startswith("Location/")
        ]  # fmt: skip
        if location:
            participants.append(
                {"actor": {"reference": f"Location/{location}"}, "required": "required", "status": "accepted"}
            )
        changed = {
            **appt,
            "start": slot["start"],
            "end": slot["end"],
            "minutesDuration": int((opening.end - opening.start).total_seconds() // 60),
            "slot": [{"reference": f"Slot/{new_slot_id}"}],
            "appointmentType": model.mode_concept(opening.mode),
            "participant": participants,
        }
        try:
            stored = await rec.update(changed, version=version)
        except FhirError as exc:
            if exc.status == 412:
                raise SchedulingError(
                    _("This appointment was changed meanwhile. Please look at it again.")
                ) from exc
            raise
    out = model.visit_of(stored)
    assert out is not None
    await enqueue_reminders(rec.conn, rec.actor.org_id, out, settings)
    await before.enqueue_form_reminders(rec.conn, rec.actor.org_id, out)
    return out


async def visits_of_patient(rec: Records, patient_id: str) -> list[Visit]:
    page = await rec.search(
        "Appointment", [("patient", f"Patient/{patient_id}"), ("_sort", "date"), ("_count", "200")]
    )
    return [v for v in (model.visit_of(a) for a in page) if v is not None]


async def visits_of_practitioner(
    rec: Records, practitioner_id: str, start: dt.datetime, end: dt.datetime
) -> list[Visit]:
    """The practitioner's appointments in [start, end) that the reader may see."""
    page = await rec.search(
        "Appointment",
        [("practitioner", f"Practitioner/{practitioner_id}"), ("date", "ge" + model.iso_utc(start)),
         ("date", "lt" + model.iso_utc(end)), ("_sort", "date"), ("_count", "500")],
    )  # fmt: skip
    return [v for v in (model.visit_of(a) for a in page) if v is not None]


# -- the front desk: availability -----------------------------------------------------------------


async def schedule_for(rec: Records, who: Clinician, settings: Settings) -> str:
    """The id of the role's Schedule (one per role, as in the demo); made when there is none."""
    page = await rec.search("Schedule", [("actor", f"PractitionerRole/{who.role_id}"), ("_count", "1")])
    if len(page):
        return str(page.resources[0]["id"])
    made = await rec.create(
        "Schedule",
        {
            "resourceType": "Schedule",
            "active": True,
            "actor": [{"reference": f"PractitionerRole/{who.role_id}"}]
            + [{"reference": f"Location/{loc}"} for loc in who.location_ids],
            "comment": f"{who.name} ({settings.clinic_timezone}).",
        },
    )
    return str(made["id"])


async def add_availability(
    rec: Records,
    settings: Settings,
    who: Clinician,
    *,
    day: dt.date,
    start: dt.time,
    end: dt.time,
    minutes: int,
    mode: str,
    location_id: str | None,
    service_id: str | None,
) -> int:
    """Free Slots of ``minutes`` from ``start`` to ``end`` on ``day`` (clinic time), skipping
    times where the role already has a Slot; returns how many were made."""
    zone = ZoneInfo(settings.clinic_timezone)
    first = dt.datetime.combine(day, start, zone)
    last = dt.datetime.combine(day, end, zone)
    if mode not in model.MODES:
        raise SchedulingError(_("Choose how the visits happen."), "mode")
    if not 5 <= minutes <= 240:
        raise SchedulingError(_("A visit lasts 5 to 240 minutes."), "minutes")
    if last <= first or last - first < dt.timedelta(minutes=minutes):
        raise SchedulingError(_("The end must be at least one visit after the start."), "end")
    if first <= _now():
        raise SchedulingError(_("Add availability in the future only."), "day")
    if mode == model.IN_PERSON and location_id not in who.location_ids:
        raise SchedulingError(_("Choose where the in-person visits happen."), "location")
    service = await rec.read("HealthcareService", service_id) if service_id else None
    if service_id and (service is None or service_id not in who.service_ids):
        raise SchedulingError(_("Choose a kind of visit this clinician offers."), "service")
    schedule_id = await schedule_for(rec, who, settings)
    existing = await slots(rec, [who.role_id], first - dt.timedelta(hours=4), last + dt.timedelta(hours=4))
    made = 0
    at = first
    while at + dt.timedelta(minutes=minutes) <= last:
        until = at + dt.timedelta(minutes=minutes)
        if not any(o.start < until and at < o.end for o in existing):
            slot: dict[str, Any] = {
                "resourceType": "Slot",
                "schedule": {"reference": f"Schedule/{schedule_id}"},
                "status": "free",
                "start": model.local_iso(at, settings.clinic_timezone),
                "end": model.local_iso(until, settings.clinic_timezone),
                "appointmentType": model.mode_concept(mode),
            }
            if service is not None:
                slot["serviceType"] = [model.service_concept(service)]
            if mode == model.IN_PERSON and location_id:
                slot["extension"] = [
                    {
                        "url": model.SLOT_LOCATION_EXT,
                        "valueReference": {"reference": f"Location/{location_id}"},
                    }
                ]
            await rec.create("Slot", slot)
            made += 1
        at = until
    return made


async def set_blocked(rec: Records, slot_id: str, version: int, blocked: bool) -> None:
    """Block a free Slot (admin time) or open a blocked one again, on the version shown."""
    got = await rec.read_versioned("Slot", slot_id)
    if got is None:
        raise LookupError(slot_id)
    slot, current = got
    wanted_from = "free" if blocked else "busy-unavailable"
    if slot.get("status") != wanted_from or current != version:
        raise SlotTaken(_("That time was changed meanwhile. Please look at it again."))
    changed = {**slot, "status": "busy-unavailable" if blocked else "free"}
    if blocked:
        changed["comment"] = "Blocked"
    else:
        changed.pop("comment", None)
    try:
        await rec.update(changed, version=version)
    except FhirError as exc:
        if exc.status == 412:
            raise SlotTaken(_("That time was changed meanwhile. Please look at it again.")) from exc
        raise


# -- reminders ------------------------------------------------------------------------------------


async def enqueue_reminders(conn: Conn, org_id: str, v: Visit, settings: Settings) -> list[str]:
    """One job per reminder offset still ahead, and for a video, phone or chat visit (each starts
    with a check-in on the visit's page) the job that sends its single-use join links shortly before
    it starts (visits/join.py); returns the ids queued."""
    out = []
    now = clock.now_us()
    if v.mode in model.VIRTUAL_MODES:
        from housecall.visits import join  # the visits package registers the job; imported late

        job = await join.enqueue(conn, org_id, v.id, v.start_us)
        if job:
            out.append(job)
    for hours in model.reminder_offsets(settings.reminder_hours):
        run_at = v.start_us - hours * 3600 * US
        if run_at <= now:
            continue
        args = {"org": org_id, "appointment": v.id, "start": v.start_us, "hours": hours}
        job = await jobs.enqueue(conn, REMIND, args, run_at=run_at, key=f"remind:{v.id}:{v.start_us}:{hours}")
        if job:
            out.append(job)
    return out


@jobs.handler(REMIND)
async def remind(job: jobs.JobContext, args: dict[str, Any]) -> None:
    """Remind the patient (and their proxies) of a visit, if it is still booked at that time, by the
    channels each chose (``housecall.notify``: a fixed sentence and a link, not even the time)."""
    org_id, appointment_id = str(args["org"]), str(args["appointment"])
    settings = job.settings
    async with job.db.transaction() as conn:
        ctx = ix.Ctx(conn, settings, settings.public_url.rstrip("/") + "/fhir", Access.system(org_id))
        try:
            out = await ix.read(ctx, "Appointment", appointment_id)
        except FhirError as exc:
            if exc.status in (404, 410):
                return
            raise
        assert out.stored is not None
        v = model.visit_of(out.stored.resource())
        if v is None or not v.booked or v.start_us != int(args["start"]) or v.patient is None:
            return  # cancelled or moved since: the reminder for the new time is its own job
        link = f"/portal/appointments/{v.id}"
        for account_id, _email in await accounts_for_patient(conn, org_id, v.patient):
            key = f"remind:{v.id}:{v.start_us}:{args['hours']}:{account_id}"
            await notify.send(conn, org_id, account_id, notify.Kind.APPOINTMENT_REMINDER, link, key=key)
