"""Virtual visits: the rules, over the store (docs/decisions/0018).

A virtual visit is a booked ``Appointment`` whose ``appointmentType`` is ActCode ``VR`` (how the
demo data and booking mark video visits). What happens at the visit is one ``Encounter`` (class
``VR``, ``appointment`` → the Appointment), created when the patient checks in:

- ``status``: ``arrived`` while the patient waits, ``in-progress`` once a clinician admitted them,
  ``finished`` when the clinician hangs up; ``statusHistory`` keeps when each began and ended, so
  the check-in time and the waiting time are on record;
- ``period``: from admission to the end; ``length``: its minutes (the visit's duration);
- ``participant``: the clinicians of the Appointment (``PPRF``), guests (``PART``), each with the
  period they were in the call;
- extensions: the US state the patient said they are in now (``visit-location-state``), the
  phone number for a fallback call (``visit-callback-phone``), and the modality history
  (``visit-modality``: video → audio → phone, each with when and who changed it), which starts at
  check-in with the mode the visit was booked as: video, phone or chat (decision 0025).

Chat at the visit is ``Communication`` with ``encounter`` set; a staff note to a waiting patient
is the same with another category. The technology check's verdict is an ``Observation`` in the
patient's record. The phone fallback opens an urgent ``callback`` Task in the care team's inbox.

Patients may not write Encounters or Tasks on the API: the visit keeps its record on the
patient's behalf (``on_behalf``) after the caller checked who they are, and those writes' audit
events name the person.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from housecall.access.actor import Actor
from housecall.access.policy import Access
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.messaging import attachments
from housecall.visits import telephony
from housecall.web import nav
from housecall.web.records import Records
from housecall.workspace.inbox import person_name

HC = "https://housecall.example"
EXT = f"{HC}/fhir/StructureDefinition/"
LOCATION_STATE_EXT = EXT + "visit-location-state"
CALLBACK_PHONE_EXT = EXT + "visit-callback-phone"
MODALITY_EXT = EXT + "visit-modality"
# How licences are written (demo/generate.py, and what booking reads): Practitioner.qualification
# with the state in the license-state extension (USPS code) or as the last segment of the
# identifier system, and a period that must cover the day.
LICENSE_STATE_EXT = EXT + "license-state"
LICENSE_SYSTEM = f"{HC}/license/"
USPS = "https://www.usps.com/"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
VISIT_SYSTEM = f"{HC}/fhir/CodeSystem/visit"
MODALITIES = ("video", "audio", "phone", "chat")
# How a visit was booked (scheduling's visit-mode code system, decision 0014/0025); ``VR`` alone
# reads as video.
MODE_SYSTEM = f"{HC}/fhir/CodeSystem/visit-mode"
BOOKED_MODES = ("video", "phone", "chat")
CHAT_CATEGORY = "visit-chat"
NOTICE_CATEGORY = "visit-notice"
TECH_CHECK_CODE = "tech-check"
CHAT_LIMIT = 2000

STATES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon",
    "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia",
    "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}  # fmt: skip


class VisitError(Exception):
    """A visit rule refused the request; ``code`` says which (the page words it)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# -- time -------------------------------------------------------------------------------------------


def now_dt() -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now_us() / 1e6, dt.UTC)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


# -- the visit --------------------------------------------------------------------------------------


@dataclass
class Visit:
    """One virtual visit: its Appointment and (once the patient checked in) its Encounter."""

    appointment: dict[str, Any]
    encounter: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.appointment["id"])

    @property
    def patient_id(self) -> str | None:
        for p in self.appointment.get("participant") or []:
            ref = (p.get("actor") or {}).get("reference") or ""
            if ref.startswith("Patient/"):
                return ref.removeprefix("Patient/")
        return None

    @property
    def practitioners(self) -> list[str]:
        """The clinicians of the visit, as ``Practitioner/<id>`` references."""
        out = []
        for p in self.appointment.get("participant") or []:
            ref = (p.get("actor") or {}).get("reference") or ""
            if ref.startswith("Practitioner/") and p.get("status") != "declined":
                out.append(ref)
        return out

    @property
    def start(self) -> dt.datetime | None:
        return parse_time(self.appointment.get("start"))

    @property
    def minutes(self) -> int:
        value = self.appointment.get("minutesDuration")
        if isinstance(value, int) and value > 0:
            return value
        start, end = self.start, parse_time(self.appointment.get("end"))
        if start and end and end > start:
            return max(1, int((end - start).total_seconds() // 60))
        return 20

    @property
    def is_virtual(self) -> bool:
        codings = (self.appointment.get("appointmentType") or {}).get("coding") or []
        return any(c.get("system") == ACT_CODE and c.get("code") == "VR" for c in codings)

    @property
    def status(self) -> str:
        """``booked`` (nobody checked in), ``arrived`` (waiting), ``in-progress``, ``finished``."""
        if self.encounter is None:
            return "booked"
        return str(self.encounter.get("status", "arrived"))

    @property
    def location_state(self) -> str | None:
        for ext in (self.encounter or {}).get("extension") or []:
            if ext.get("url") == LOCATION_STATE_EXT:
                for c in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                    return str(c.get("code"))
        return None

    @property
    def callback_phone(self) -> str | None:
        for ext in (self.encounter or {}).get("extension") or []:
            if ext.get("url") == CALLBACK_PHONE_EXT:
                return str((ext.get("valueContactPoint") or {}).get("value") or "") or None
        return None

    @property
    def checked_in_at(self) -> dt.datetime | None:
        for h in (self.encounter or {}).get("statusHistory") or []:
            if h.get("status") == "arrived":
                return parse_time((h.get("period") or {}).get("start"))
        return None

    @property
    def admitted_at(self) -> dt.datetime | None:
        return parse_time(((self.encounter or {}).get("period") or {}).get("start"))

    @property
    def booked_mode(self) -> str:
        """``video``, ``phone`` or ``chat``: how the visit was booked (the Appointment's
        visit-mode code; a virtual Appointment without one is a video visit)."""
        for c in (self.appointment.get("appointmentType") or {}).get("coding") or []:
            if c.get("system") == MODE_SYSTEM and c.get("code") in BOOKED_MODES:
                return str(c["code"])
        return "video"

    @property
    def modality(self) -> str:
        """The current modality: the last of the history, else the booked mode (the history
        starts at check-in with it)."""
        history = modality_history(self.encounter)
        return history[-1]["mode"] if history else self.booked_mode

    @property
    def media(self) -> bool:
        """Whether the visit uses camera and microphone: a video visit (also once it went to audio
        only); never a phone or chat visit, nor one moved to the phone."""
        return self.booked_mode == "video" and self.modality in ("video", "audio")


def modality_history(encounter: dict[str, Any] | None) -> list[dict[str, str]]:
    """[{mode, start, by, how?}] in the order they happened (``how: auto`` when the page stepped
    down to audio by itself on poor stats)."""
    out = []
    for ext in (encounter or {}).get("extension") or []:
        if ext.get("url") != MODALITY_EXT:
            continue
        entry: dict[str, str] = {}
        for part in ext.get("extension") or []:
            if part.get("url") == "mode":
                entry["mode"] = str(part.get("valueCode"))
            elif part.get("url") == "start":
                entry["start"] = str(part.get("valueDateTime"))
            elif part.get("url") == "by":
                entry["by"] = str((part.get("valueReference") or {}).get("reference", ""))
            elif part.get("url") == "how":
                entry["how"] = str(part.get("valueCode"))
        if "mode" in entry:
            out.append(entry)
    return out


async def load_visit(rec: Records, appointment_id: str) -> Visit | None:
    """The visit, if the actor may see its Appointment and it is a virtual visit; else None."""
    if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", appointment_id):
        return None
    appointment = await rec.read("Appointment", appointment_id)
    if appointment is None:
        return None
    visit = Visit(appointment)
    if not visit.is_virtual or visit.patient_id is None:
        return None
    page = await rec.search("Encounter", [("appointment", f"Appointment/{appointment_id}"), ("_count", "1")])
    visit.encounter = page.resources[0] if page.resources else None
    return visit


# -- who is who -------------------------------------------------------------------------------------


def role_in(actor: Actor, visit: Visit) -> str | None:
    """``patient`` (the patient or a proxy acting for them), ``clinician`` (a Practitioner on the
    Appointment), ``staff`` (any other care-team or front-desk member who can see it), or None."""
    if actor.kind in nav.PORTAL:
        return "patient" if actor.patient_id and actor.patient_id == visit.patient_id else None
    if actor.fhir_user and actor.fhir_user in visit.practitioners:
        return "clinician"
    if actor.is_staff_side and (actor.roles & (nav.CARE | nav.DESK)):
        return "staff"
    return None


# -- licensure --------------------------------------------------------------------------------------


def license_states(practitioner: dict[str, Any], on: dt.date) -> set[str]:
    """The states where the practitioner holds a licence current on ``on``."""
    out: set[str] = set()
    day = on.isoformat()
    for q in practitioner.get("qualification") or []:
        state = None
        for ext in q.get("extension") or []:
            if ext.get("url") == LICENSE_STATE_EXT:
                for c in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                    state = c.get("code")
        if state is None:
            for ident in q.get("identifier") or []:
                system = ident.get("system") or ""
                if system.startswith(LICENSE_SYSTEM):
                    state = system.removeprefix(LICENSE_SYSTEM)
        if not isinstance(state, str) or state not in STATES:
            continue
        period = q.get("period") or {}
        start, end = str(period.get("start") or "")[:10], str(period.get("end") or "")[:10]
        if (start and start > day) or (end and end < day):
            continue  # not yet valid, or lapsed
        out.add(state)
    return out


async def unlicensed(rec: Records, visit: Visit, state: str) -> list[str]:
    """The clinicians of the visit (display names) who hold no current licence in ``state``."""
    today = now_dt().date()
    out = []
    for ref in visit.practitioners:
        practitioner = await rec.read("Practitioner", ref.removeprefix("Practitioner/"))
        if practitioner is None or state not in license_states(practitioner, today):
            out.append(person_name(practitioner) or ref)
    return out


# -- writing on the patient's behalf ---------------------------------------------------------------


async def _change_encounter(rec: Records, visit: Visit, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the visit's Encounter on its current version (re-read and re-applied
    when someone else wrote it in between)."""
    assert visit.encounter is not None
    writer = rec.on_behalf()
    for _ in range(5):
        found = await writer.read_versioned("Encounter", visit.encounter["id"])
        if found is None:
            raise VisitError("no-encounter")
        encounter, version = found
        change(encounter)
        try:
            visit.encounter = await writer.update(encounter, version=version)
            return
        except FhirError as exc:
            if exc.status != 412:
                raise
    raise VisitError("busy")


def _modality_entry(mode: str, when: str, by: str | None, *, auto: bool = False) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "mode", "valueCode": mode},
        {"url": "start", "valueDateTime": when},
    ]
    if by:
        parts.append({"url": "by", "valueReference": {"reference": by}})
    if auto:
        parts.append({"url": "how", "valueCode": "auto"})
    return {"url": MODALITY_EXT, "extension": parts}


def _set_ext(resource: dict[str, Any], url: str, ext: dict[str, Any]) -> None:
    others = [e for e in resource.get("extension") or [] if e.get("url") != url]
    resource["extension"] = [*others, {"url": url, **ext}]


def _close_history(encounter: dict[str, Any], when: str) -> None:
    for h in encounter.get("statusHistory") or []:
        period = h.setdefault("period", {})
        if "end" not in period:
            period["end"] = when


PHONE = re.compile(r"^\+?[0-9 ().\-]{7,20}$")


def clean_phone(value: str) -> str | None:
    value = value.strip()
    digits = re.sub(r"\D", "", value)
    if not PHONE.match(value) or not 7 <= len(digits) <= 15:
        return None
    return value


async def check_in(rec: Records, visit: Visit, *, state: str, phone: str, by: str | None = None) -> list[str]:
    """The patient says where they are now and how to call them. Returns the clinicians not
    licensed in that state (empty: the patient now waits to be admitted); the Encounter records the
    check-in either way, so staff see who tried. The modality history starts here with the booked
    mode (video, phone or chat), ``by`` the person checking in. Precondition: the caller is the
    visit's patient."""
    if visit.status == "finished":
        raise VisitError("ended")
    missing = await unlicensed(rec, visit, state)
    when = iso(now_dt())
    state_ext = {
        "valueCodeableConcept": {"coding": [{"system": USPS, "code": state, "display": STATES[state]}]}
    }
    phone_ext = {"valueContactPoint": {"system": "phone", "value": phone, "use": "mobile"}}
    if visit.encounter is None:
        encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "status": "arrived",
            "class": {"system": ACT_CODE, "code": "VR", "display": "virtual"},
            "statusHistory": [{"status": "arrived", "period": {"start": when}}],
            "subject": {"reference": f"Patient/{visit.patient_id}"},
            "appointment": [{"reference": f"Appointment/{visit.id}"}],
            "participant": [
                {"type": [{"coding": [{"system": PARTICIPATION, "code": "PPRF", "display": "primary performer"}]}],
                 "individual": {"reference": ref}}
                for ref in visit.practitioners
            ],
            "extension": [{"url": LOCATION_STATE_EXT, **state_ext}, {"url": CALLBACK_PHONE_EXT, **phone_ext},
                          _modality_entry(visit.booked_mode, when, by)],
        }  # fmt: skip
        for key in ("serviceType", "reasonReference"):
            if visit.appointment.get(key):
                value = visit.appointment[key]
                encounter[key] = value[0] if key == "serviceType" and isinstance(value, list) else value
        visit.encounter = await rec.on_behalf().create("Encounter", encounter)
        return missing

    def update(encounter: dict[str, Any]) -> None:
        _set_ext(encounter, LOCATION_STATE_EXT, state_ext)
        _set_ext(encounter, CALLBACK_PHONE_EXT, phone_ext)

    await _change_encounter(rec, visit, update)
    return missing


async def admit(rec: Records, visit: Visit, *, by: str) -> None:
    """A clinician lets the waiting patient in: the visit starts (once). Refused when the patient
    has not checked in or is in a state the clinicians are not licensed in."""
    if visit.encounter is None or visit.location_state is None:
        raise VisitError("not-checked-in")
    if visit.status == "finished":
        raise VisitError("ended")
    if await unlicensed(rec, visit, visit.location_state):
        raise VisitError("unlicensed")
    if visit.status == "in-progress":
        return
    when = iso(now_dt())

    def update(encounter: dict[str, Any]) -> None:
        if encounter.get("status") == "in-progress":
            return
        _close_history(encounter, when)
        encounter["status"] = "in-progress"
        encounter.setdefault("statusHistory", []).append({"status": "in-progress", "period": {"start": when}})
        encounter["period"] = {"start": when}
        for p in encounter.get("participant") or []:
            p.setdefault("period", {"start": when})
        if not modality_history(encounter):  # checked in before the history started at check-in
            encounter.setdefault("extension", []).append(_modality_entry(visit.booked_mode, when, by))

    await _change_encounter(rec, visit, update)
    if visit.modality == "phone" and visit.callback_phone:
        # A phone visit starts with a call to the patient (telephony.py: a provider rings them, the
        # local one puts the call in the clinician's inbox).
        await telephony.current().call(rec, visit, visit.callback_phone, reason=telephony.PHONE_VISIT, by=by)


async def add_participant(rec: Records, visit: Visit, *, label: str, individual: str | None = None) -> None:
    """Record someone else admitted to the call: a guest (interpreter, family member, by label) or a
    proxy (their RelatedPerson)."""
    if visit.encounter is None:
        return
    when = iso(now_dt())

    def update(encounter: dict[str, Any]) -> None:
        entry: dict[str, Any] = {
            "type": [{"coding": [{"system": PARTICIPATION, "code": "PART", "display": "participation"}],
                      "text": label[:100]}],
            "period": {"start": when},
        }  # fmt: skip
        if individual:
            entry["individual"] = {"reference": individual}
        encounter.setdefault("participant", []).append(entry)

    await _change_encounter(rec, visit, update)


async def change_modality(
    rec: Records, visit: Visit, mode: str, *, by: str | None, auto: bool = False
) -> bool:
    """Record a switch (video → audio, … → phone); False when it is already the current one.
    ``auto``: the page switched by itself because the connection's stats said video could not
    hold (``by`` is then whose connection it was); the entry says ``how: auto``."""
    if mode not in MODALITIES:
        raise VisitError("bad-modality")
    if visit.encounter is None:
        raise VisitError("not-checked-in")
    if visit.modality == mode and modality_history(visit.encounter):
        return False
    when = iso(now_dt())
    await _change_encounter(
        rec, visit, lambda e: e.setdefault("extension", []).append(_modality_entry(mode, when, by, auto=auto))
    )
    return True


async def end_visit(rec: Records, visit: Visit) -> None:
    """The clinician hangs up: the Encounter is finished, with its end and duration."""
    if visit.encounter is None or visit.status == "finished":
        return
    now = now_dt()
    when = iso(now)

    def update(encounter: dict[str, Any]) -> None:
        if encounter.get("status") == "finished":
            return
        _close_history(encounter, when)
        encounter["status"] = "finished"
        encounter.setdefault("statusHistory", []).append(
            {"status": "finished", "period": {"start": when, "end": when}}
        )
        period = encounter.setdefault("period", {"start": when})
        period["end"] = when
        start = parse_time(period.get("start")) or now
        minutes = round((now - start).total_seconds() / 60, 1)
        encounter["length"] = {
            "value": minutes,
            "unit": "min",
            "system": "http://unitsofmeasure.org",
            "code": "min",
        }
        for p in encounter.get("participant") or []:
            if "period" in p and "end" not in p["period"]:
                p["period"]["end"] = when

    await _change_encounter(rec, visit, update)


# -- chat, notes to the waiting room ---------------------------------------------------------------


def _communication(
    visit: Visit, category: str, text: str, sender: str | None, guest: str | None
) -> dict[str, Any]:
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": VISIT_SYSTEM, "code": category}]}],
        "subject": {"reference": f"Patient/{visit.patient_id}"},
        "sent": iso(now_dt()),
        "payload": [{"contentString": text}],
    }
    if visit.encounter is not None:
        comm["encounter"] = {"reference": f"Encounter/{visit.encounter['id']}"}
    if sender:
        comm["sender"] = {"reference": sender}
    if guest:
        comm["note"] = [{"authorString": guest[:100], "text": "Sent by a guest of the visit"}]
    if category == NOTICE_CATEGORY:
        comm["recipient"] = [{"reference": f"Patient/{visit.patient_id}"}]
    return comm


async def record_chat(
    rec: Records, visit: Visit, text: str, *, sender: str | None, guest: str | None = None
) -> dict[str, Any]:
    """Store one chat line of the visit (as the sender; a guest's on the visit's behalf)."""
    text = text.strip()[:CHAT_LIMIT]
    if not text:
        raise VisitError("empty")
    if visit.encounter is None:
        raise VisitError("not-checked-in")  # chat belongs to the visit's record, which starts at check-in
    writer = rec if sender and not guest else rec.on_behalf()
    return await writer.create("Communication", _communication(visit, CHAT_CATEGORY, text, sender, guest))


async def record_notice(rec: Records, visit: Visit, text: str, *, sender: str | None) -> dict[str, Any]:
    """A note from staff to the waiting patient ("running 10 minutes late")."""
    text = text.strip()[:500]
    if not text:
        raise VisitError("empty")
    return await rec.on_behalf().create(
        "Communication", _communication(visit, NOTICE_CATEGORY, text, sender, None)
    )


def may_share_files(role: str | None, visit: Visit) -> bool:
    """Who may send a file into the call: a member admitted to it. Over HTTP there is no socket
    to ask, so it is read from the record the way the signaling decides: a clinician of the visit
    (in the call from the start), or the patient/proxy once the Encounter is in progress (a
    waiting patient is not). Staff of the care team and a visit that ended: nobody."""
    if visit.encounter is None or visit.status == "finished":
        return False
    return role == "clinician" or (role == "patient" and visit.status == "in-progress")


def may_open_files(role: str | None, visit: Visit) -> bool:
    """Who may download a file shared in the call: its clinicians, and the patient/proxy once
    admitted (and after the visit: it is their record). A waiting patient may not."""
    if visit.encounter is None:
        return False
    return role == "clinician" or (role == "patient" and visit.status in ("in-progress", "finished"))


async def record_file(
    rec: Records, visit: Visit, file: attachments.File, *, sender: str | None
) -> dict[str, Any]:
    """Store a file shared in the call as a chat entry of the visit: the bytes in a Binary kept for
    the patient's record (written as the system after the caller was checked, since people never
    reach Binary on the API, decision 0012), and a ``visit-chat`` Communication (as the sender)
    whose payload is the attachment pointing at it."""
    if visit.encounter is None or visit.patient_id is None:
        raise VisitError("not-checked-in")
    binary = await rec.on_behalf(visit.patient_id).create("Binary", file.binary(visit.patient_id))
    comm = _communication(visit, CHAT_CATEGORY, "", sender, None)
    comm["payload"] = [{"contentAttachment": file.attachment(binary["id"])}]
    return await rec.create("Communication", comm)


def file_of_message(comm: dict[str, Any]) -> dict[str, Any] | None:
    """The attachment of a chat entry, or None for a line of text."""
    for part in comm.get("payload") or []:
        if isinstance(part.get("contentAttachment"), dict):
            return part["contentAttachment"]  # type: ignore[no-any-return]
    return None


async def shared_file(rec: Records, visit: Visit, message_id: str) -> tuple[bytes, str, str] | None:
    """(bytes, content type, file name) of a file shared in this visit's call, or None. The chat
    entry is read as the person (their access to it is checked) and must belong to this visit's
    Encounter; its Binary is read as the system and served only if it is kept for this patient's
    record and its bytes still prove an accepted type."""
    if visit.encounter is None or not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", message_id):
        return None
    comm = await rec.read("Communication", message_id)
    if comm is None or (comm.get("encounter") or {}).get("reference") != f"Encounter/{visit.encounter['id']}":
        return None
    attachment = file_of_message(comm)
    url = str((attachment or {}).get("url", ""))
    if attachment is None or not url.startswith("Binary/") or visit.patient_id is None:
        return None
    binary = await rec.on_behalf(visit.patient_id).read("Binary", url.removeprefix("Binary/"))
    if (
        binary is None
        or (binary.get("securityContext") or {}).get("reference") != f"Patient/{visit.patient_id}"
    ):
        return None
    data = attachments.decode(binary)
    content_type = attachments.sniff(data)
    if content_type is None:
        return None
    return data, content_type, attachments.safe_name(str(attachment.get("title") or ""), content_type)


async def chat_history(rec: Records, visit: Visit) -> list[dict[str, Any]]:
    if visit.encounter is None:
        return []
    page = await rec.search(
        "Communication",
        [("encounter", f"Encounter/{visit.encounter['id']}"), ("_sort", "sent"), ("_count", "200")],
    )
    return page.resources


# -- phone fallback ---------------------------------------------------------------------------------


async def phone_instead(
    rec: Records, visit: Visit, *, by: str | None, phone: str | None = None
) -> dict[str, Any]:
    """ "Call me by phone instead": the visit becomes a phone visit and an urgent callback Task
    (number, when, which visit) goes to the clinician's pool. Returns the Task."""
    if visit.encounter is None:
        raise VisitError("not-checked-in")
    number = phone or visit.callback_phone
    if not number:
        raise VisitError("no-phone")
    if phone and phone != visit.callback_phone:
        _phone = phone
        await _change_encounter(
            rec, visit,
            lambda e: _set_ext(e, CALLBACK_PHONE_EXT,
                               {"valueContactPoint": {"system": "phone", "value": _phone, "use": "mobile"}}),
        )  # fmt: skip
    await change_modality(rec, visit, "phone", by=by)
    return await telephony.current().call(rec, visit, number, reason=telephony.FALLBACK, by=by)


# -- the waiting room: the clinician's real queue --------------------------------------------------


@dataclass(frozen=True)
class Place:
    position: int  # 1: next in line
    ahead: int  # patients waiting before this one
    minutes: int  # estimated wait


@dataclass(frozen=True)
class Queued:
    """One visit in a clinician's line, as much of it as the estimate needs (no one's identity)."""

    appointment_id: str
    in_progress: bool
    start: dt.datetime | None
    checked_in_at: dt.datetime | None
    admitted_at: dt.datetime | None
    minutes: int


async def clinicians_line(rec: Records, practitioner: str) -> list[Queued]:
    """The clinician's checked-in and in-progress visits (one indexed search with ``_include`` of
    the Appointments). Read as the system without audit: other patients' visits only contribute
    counts and minutes to ``place_in``, nothing about them leaves. One read serves everyone
    waiting for this clinician (``signal.Line``)."""
    ctx = ix.Ctx(rec.conn, rec.ctx.settings, rec.ctx.base_url, Access.system(rec.actor.org_id))
    query = [
        ("participant", practitioner),
        ("status", "arrived,in-progress"),
        ("_include", "Encounter:appointment"),
        ("_count", "200"),
    ]
    result = await ix.search(ctx, ix.search_request(ctx, "Encounter", query))
    included = {f"{s.res_type}/{s.res_id}": s.resource() for s in result.included}
    line = []
    for stored in result.matches:
        other = Visit(included.get(_appointment_ref(stored.resource()), {"id": ""}), stored.resource())
        line.append(Queued(other.id, other.status == "in-progress", other.start, other.checked_in_at,
                           other.admitted_at, other.minutes))  # fmt: skip
    return line


def place_in(line: list[Queued], visit: Visit, now: dt.datetime) -> Place:
    """Where this visit's patient stands in the clinician's line at ``now``, and an honest
    estimate: the time left of the visit in progress (by its booked length), plus the booked
    length of each patient waiting before this one (by appointment time, then check-in), and never
    earlier than the appointment's own start."""
    busy_minutes = 0.0
    waiting: list[tuple[dt.datetime, dt.datetime, int, str]] = []
    for other in line:
        start = other.start
        if start is None or abs((start - now).total_seconds()) > 12 * 3600:
            continue  # not today's: a visit nobody closed must not hold up the line
        if other.in_progress:
            began = other.admitted_at or now
            # By its booked length; one that runs over still holds the line (at least a minute).
            busy_minutes += max(1.0, other.minutes - (now - began).total_seconds() / 60)
        else:
            waiting.append((start, other.checked_in_at or now, other.minutes, other.appointment_id))
    waiting.sort()
    ahead = 0
    minutes = busy_minutes
    mine = visit.id
    for _start, _checked, length, appt_id in waiting:
        if appt_id == mine:
            break
        ahead += 1
        minutes += length
    if visit.start is not None:
        minutes = max(minutes, (visit.start - now).total_seconds() / 60)
    return Place(ahead + 1, ahead, max(0, math.ceil(minutes)))


async def place_in_line(rec: Records, visit: Visit) -> Place:
    """Where this visit's patient stands in the (first) clinician's queue today (``place_in``)."""
    if not visit.practitioners:
        return Place(1, 0, 0)
    return place_in(await clinicians_line(rec, visit.practitioners[0]), visit, now_dt())


def _appointment_ref(encounter: dict[str, Any]) -> str:
    for a in encounter.get("appointment") or []:
        return str(a.get("reference", ""))
    return ""


async def waiting_room(rec: Records) -> list[Visit]:
    """Today's checked-in virtual visits the actor may see (waiting first, then in progress)."""
    page = await rec.search(
        "Encounter",
        [("class", f"{ACT_CODE}|VR"), ("status", "arrived,in-progress"), ("_include", "Encounter:appointment"),
         ("_count", "200")],
    )  # fmt: skip
    now = now_dt()
    out = []
    for enc in page.resources:
        appt = page.included.get(_appointment_ref(enc))
        if appt is None:
            continue
        visit = Visit(appt, enc)
        if visit.start is None or abs((visit.start - now).total_seconds()) > 12 * 3600:
            continue
        out.append(visit)
    out.sort(key=lambda v: (v.status != "arrived", v.start or now, v.checked_in_at or now))
    return out


# -- the technology check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckStats:
    """What the page read from ``getStats()`` during the echo call."""

    connected: bool
    rtt_ms: float | None = None
    bitrate_kbps: float | None = None
    loss_pct: float | None = None
    candidate: str | None = None  # host | srflx | prflx | relay
    frames: int = 0  # video frames decoded from the echo


VERDICTS = {
    "video": "Video should work",
    "audio": "Use audio only",
    "phone": "Your network blocks video — we will call you",
}


def verdict(stats: CheckStats) -> str:
    """``video``, ``audio`` or ``phone``: no connection at all means the network blocks the call;
    a connection that cannot carry video well (slow round trips, loss, little bandwidth, no frames
    back) means audio only."""
    if not stats.connected:
        return "phone"
    if stats.rtt_ms is not None and stats.rtt_ms > 400:
        return "audio"
    if stats.loss_pct is not None and stats.loss_pct > 5:
        return "audio"
    if stats.bitrate_kbps is not None and stats.bitrate_kbps < 300:
        return "audio"
    if stats.frames <= 0:
        return "audio"
    return "video"


def check_observation(patient_id: str, stats: CheckStats, result: str) -> dict[str, Any]:
    components: list[dict[str, Any]] = []

    def quantity(code: str, text: str, value: float | None, unit: str) -> None:
        if value is not None and math.isfinite(value):
            components.append({"code": {"coding": [{"system": VISIT_SYSTEM, "code": code}], "text": text},
                               "valueQuantity": {"value": round(value, 1), "unit": unit}})  # fmt: skip

    quantity("rtt", "Round-trip time", stats.rtt_ms, "ms")
    quantity("bitrate", "Available bitrate", stats.bitrate_kbps, "kbit/s")
    quantity("loss", "Packet loss", stats.loss_pct, "%")
    quantity("frames", "Video frames received", float(stats.frames), "frames")
    if stats.candidate:
        components.append({"code": {"coding": [{"system": VISIT_SYSTEM, "code": "candidate"}],
                                    "text": "Connection type"}, "valueString": stats.candidate})  # fmt: skip
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {"system": VISIT_SYSTEM, "code": TECH_CHECK_CODE, "display": "Telehealth technology check"}
            ]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        # Milliseconds: two checks a moment apart must still sort newest first.
        "effectiveDateTime": now_dt().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "valueCodeableConcept": {
            "coding": [{"system": VISIT_SYSTEM, "code": result, "display": VERDICTS[result]}]
        },
        "component": components,
    }


async def store_check(rec: Records, patient_id: str, stats: CheckStats) -> tuple[str, dict[str, Any]]:
    """Store the verdict in the patient's record (as the patient or proxy: theirs to write)."""
    result = verdict(stats)
    return result, await rec.create("Observation", check_observation(patient_id, stats, result))


async def latest_checks(rec: Records, patient_ids: list[str]) -> dict[str, str]:
    """Patient id -> the verdict code of their latest technology check."""
    if not patient_ids:
        return {}
    page = await rec.search(
        "Observation",
        [("code", f"{VISIT_SYSTEM}|{TECH_CHECK_CODE}"), ("subject", ",".join(f"Patient/{p}" for p in patient_ids)),
         ("_sort", "-date"), ("_count", "200")],
    )  # fmt: skip
    out: dict[str, str] = {}
    for obs in page.resources:
        pid = (obs.get("subject") or {}).get("reference", "").removeprefix("Patient/")
        if pid in out:
            continue
        for c in (obs.get("valueCodeableConcept") or {}).get("coding") or []:
            out[pid] = str(c.get("code"))
    return out
