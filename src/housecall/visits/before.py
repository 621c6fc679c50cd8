"""Before a virtual visit (docs/decisions/0020): where the patient will be, interpreters, and the
reminders to fill in the forms sent ahead.

- **Licensure at booking.** A video or phone visit may only be booked with a clinician licensed in
  the US state the patient will be in (``visits/service.license_states``). That state is the one
  the patient picks on the booking page, else the state of their home address; it is kept on the
  Appointment (``visit-planned-state``) so the reminder and the check-in can use it. Check-in asks
  again, because where someone is on the day is what the law looks at (decision 0018).
- **Interpreters** are asked for at booking and kept on the Appointment as a participant of type
  ``TRANSL`` (v3 ParticipationType) with no actor yet, status ``needs-action``, and the language in
  the ``interpreter-language`` extension (BCP 47): the Appointment says who is needed before anyone
  is assigned, the way FHIR models a participant that is a role rather than a person.
- **Form reminders** are jobs queued with the booking (and again with a move), 48 and 24 hours
  before the visit; the job sends nothing unless the visit is still booked at that time *and*
  some of its forms are still missing. The text is the fixed ``FORMS_DUE`` sentence and a link.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from housecall import notify
from housecall.access.policy import Access
from housecall.core import jobs
from housecall.core.db import Conn
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.visits.service import ACT_CODE, EXT, PARTICIPATION, STATES, license_states
from housecall.web.i18n import Msg, _

__all__ = ["STATES", "license_states"]

PLANNED_STATE_EXT = EXT + "visit-planned-state"
INTERPRETER_EXT = EXT + "interpreter-language"
USPS = "https://www.usps.com/"
BCP47 = "urn:ietf:bcp:47"
FORMS_REMIND = "visit.forms.remind"
FORM_REMINDER_HOURS = (48, 24)
US = 1_000_000

# Languages an interpreter can be booked for (BCP 47 code -> English name, translated when shown).
LANGUAGES: dict[str, str] = {
    "es": Msg("Spanish"), "zh": Msg("Chinese"), "vi": Msg("Vietnamese"), "fr": Msg("French"),
    "ar": Msg("Arabic"), "pt": Msg("Portuguese"), "ru": Msg("Russian"), "so": Msg("Somali"),
    "ne": Msg("Nepali"), "sw": Msg("Swahili"), "ase": Msg("American Sign Language"),
}  # fmt: skip


# -- where the patient will be ------------------------------------------------------------------------


def state_code(value: Any) -> str | None:
    """A USPS code from an address's ``state`` (code or full name), or None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value.upper() in STATES:
        return value.upper()
    for code, name in STATES.items():
        if name.lower() == value.lower():
            return code
    return None


def home_state(patient: dict[str, Any] | None) -> str | None:
    """The state of the patient's home address (``use`` home, else an address without a use that
    is not old), or None when the record has none."""
    addresses = [a for a in (patient or {}).get("address") or [] if a.get("use") != "old"]
    for wanted in ("home", None):
        for a in addresses:
            if a.get("use") == wanted and state_code(a.get("state")):
                return state_code(a.get("state"))
    return None


def planned_state_ext(state: str) -> dict[str, Any]:
    return {"url": PLANNED_STATE_EXT,
            "valueCodeableConcept": {"coding": [{"system": USPS, "code": state, "display": STATES[state]}]}}  # fmt: skip


def planned_state(appointment: dict[str, Any]) -> str | None:
    """The state the patient said at booking they would be in (None: not asked, in person)."""
    for ext in appointment.get("extension") or []:
        if ext.get("url") == PLANNED_STATE_EXT:
            for c in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                return state_code(c.get("code"))
    return None


# -- interpreters -----------------------------------------------------------------------------------


def interpreter_participant(language: str) -> dict[str, Any]:
    """The Appointment participant asking for an interpreter in ``language`` (nobody assigned)."""
    return {
        "type": [{"coding": [{"system": PARTICIPATION, "code": "TRANSL", "display": "Translator"}],
                  "text": "Interpreter"}],
        "required": "required",
        "status": "needs-action",
        "extension": [{"url": INTERPRETER_EXT, "valueCodeableConcept": {
            "coding": [{"system": BCP47, "code": language, "display": str(LANGUAGES[language])}]}}],
    }  # fmt: skip


def interpreter_code(appointment: dict[str, Any] | None) -> str | None:
    """The language code of the interpreter asked for on the Appointment, if any."""
    for p in (appointment or {}).get("participant") or []:
        for ext in p.get("extension") or []:
            if ext.get("url") == INTERPRETER_EXT:
                for c in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                    if c.get("code"):
                        return str(c["code"])
    return None


def interpreter_of(appointment: dict[str, Any] | None) -> str:
    """The language of the interpreter asked for, in the reader's language ("" when none)."""
    code = interpreter_code(appointment)
    if code is None:
        return ""
    return _(LANGUAGES[code]) if code in LANGUAGES else code


def language_choices() -> list[tuple[str, str]]:
    """(code, name) for the booking forms, by name in the reader's language."""
    return sorted(((c, _(n)) for c, n in LANGUAGES.items()), key=lambda x: x[1])


def is_virtual(appointment: dict[str, Any]) -> bool:
    codings = (appointment.get("appointmentType") or {}).get("coding") or []
    return any(c.get("system") == ACT_CODE and c.get("code") == "VR" for c in codings)


# -- reminders to fill in the forms -------------------------------------------------------------------


async def enqueue_form_reminders(conn: Conn, org_id: str, v: Any) -> list[str]:
    """One job per offset still ahead for a video or phone visit (``v``: scheduling's Visit)."""
    if getattr(v, "mode", "in-person") == "in-person" or v.patient is None:
        return []
    out = []
    now = clock.now_us()
    for hours in FORM_REMINDER_HOURS:
        run_at = v.start_us - hours * 3600 * US
        if run_at <= now:
            continue
        args = {"org": org_id, "appointment": v.id, "start": v.start_us, "hours": hours}
        job = await jobs.enqueue(
            conn, FORMS_REMIND, args, run_at=run_at, key=f"forms:{v.id}:{v.start_us}:{hours}"
        )
        if job:
            out.append(job)
    return out


def _start_us(appointment: dict[str, Any]) -> int | None:
    try:
        start = dt.datetime.fromisoformat(str(appointment.get("start")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(start.timestamp() * US)


@jobs.handler(FORMS_REMIND)
async def remind_forms(job: jobs.JobContext, args: dict[str, Any]) -> None:
    """Tell the patient (and their proxies) that forms are waiting, if the visit is still booked
    at the same time and something is still missing; by their chosen channels, no health
    information (not even the kind of visit), only the link to the forms."""
    from housecall.visits import forms  # the forms import this module's helpers

    org_id, appointment_id = str(args["org"]), str(args["appointment"])
    settings = job.settings
    async with job.db.transaction() as conn:
        ctx = ix.Ctx(conn, settings, settings.public_url.rstrip("/") + "/fhir", Access.system(org_id))
        try:
            appointment = (await ix.read(ctx, "Appointment", appointment_id)).stored
        except FhirError as exc:
            if exc.status in (404, 410):
                return
            raise
        assert appointment is not None
        appt = appointment.resource()
        patient = next((p["actor"]["reference"].removeprefix("Patient/") for p in appt.get("participant") or []
                        if str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")), None)  # fmt: skip
        if appt.get("status") != "booked" or _start_us(appt) != int(args["start"]) or patient is None:
            return  # cancelled or moved since: the new time has its own jobs
        if not await forms.missing_as_system(ctx, appt, patient):
            return
        link = f"/portal/appointments/{appointment_id}/forms"
        await notify.tell_patient(conn, org_id, patient, notify.Kind.FORMS_DUE, link,
                                  key=f"forms:{appointment_id}:{args['start']}:{args['hours']}")  # fmt: skip
