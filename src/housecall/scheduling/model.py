"""What the scheduling pages and services read out of FHIR Slots and Appointments.

The shape is the demo organization's (``demo/generate.py``): one Schedule per PractitionerRole,
whose ``actor`` is the role (and its Locations); Slots point at the Schedule and carry the visit
mode in ``appointmentType`` with the same v3 ActCode concepts as Encounter.class (``AMB`` in
person, ``VR`` virtual); times are wall-clock times of the clinic's zone with an explicit offset.
Housecall adds a second coding from its own code system so that a phone or chat visit (virtual, but
not video) can be told from a video visit; a Slot without it reads ``VR`` as video.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from housecall.web.i18n import _

HC = "https://housecall.example"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MODE_SYSTEM = f"{HC}/fhir/CodeSystem/visit-mode"
SLOT_LOCATION_EXT = f"{HC}/fhir/StructureDefinition/slot-location"

IN_PERSON, VIDEO, PHONE, CHAT = "in-person", "video", "phone", "chat"
MODES = (IN_PERSON, VIDEO, PHONE, CHAT)
VIRTUAL_MODES = (VIDEO, PHONE, CHAT)  # held at a distance: licensure, forms and join links apply


def mode_label(mode: str) -> str:
    return {IN_PERSON: _("In person"), VIDEO: _("Video"), PHONE: _("Phone"), CHAT: _("Chat")}.get(mode, mode)


def mode_concept(mode: str) -> dict[str, Any]:
    """``appointmentType`` for a mode: the ActCode the demo uses, plus Housecall's own code."""
    act = ("AMB", "ambulatory") if mode == IN_PERSON else ("VR", "virtual")
    text = {IN_PERSON: "In-person visit", VIDEO: "Video visit", PHONE: "Phone visit", CHAT: "Chat visit"}[
        mode
    ]
    return {
        "coding": [
            {"system": ACT_CODE, "code": act[0], "display": act[1]},
            {"system": MODE_SYSTEM, "code": mode, "display": text},
        ],
        "text": text,
    }


def mode_of(resource: dict[str, Any]) -> str:
    """The visit mode of a Slot or Appointment (in person when nothing says otherwise)."""
    codings = (resource.get("appointmentType") or {}).get("coding") or []
    for c in codings:
        if c.get("system") == MODE_SYSTEM and c.get("code") in MODES:
            return str(c["code"])
    for c in codings:
        if c.get("system") == ACT_CODE and c.get("code") == "VR":
            return VIDEO
    return IN_PERSON


def parse_instant(value: str) -> dt.datetime:
    """A FHIR instant/dateTime with an offset as an aware datetime."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def to_us(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def local_iso(moment: dt.datetime, tz: str) -> str:
    """``moment`` as a wall-clock time in ``tz`` with its offset, to the second (the demo's form)."""
    return moment.astimezone(ZoneInfo(tz)).replace(microsecond=0).isoformat()


def service_name(service: dict[str, Any] | None) -> str:
    if not service:
        return ""
    return str(service.get("name") or ((service.get("type") or [{}])[0].get("text")) or "")


def service_of(resource: dict[str, Any]) -> str:
    """The service (visit type) a Slot or Appointment names, as text."""
    for concept in resource.get("serviceType") or []:
        if concept.get("text"):
            return str(concept["text"])
        for c in concept.get("coding") or []:
            if c.get("display"):
                return str(c["display"])
    return ""


def service_concept(service: dict[str, Any]) -> dict[str, Any]:
    """``serviceType`` for Slots and Appointments of a HealthcareService: its own type when it has
    one (the demo's codes), otherwise its name as text."""
    types = service.get("type") or []
    if types:
        return dict(types[0])
    return {"text": service_name(service)}


def fits(opening: Opening, service: dict[str, Any]) -> bool:
    """Whether a Slot may be booked for the service: it names no service, or this one."""
    return not opening.service or opening.service == service_of({"serviceType": [service_concept(service)]})


def ref_id(reference: str | None, res_type: str) -> str | None:
    prefix = res_type + "/"
    if reference and reference.startswith(prefix):
        return reference[len(prefix) :]
    return None


@dataclass(frozen=True)
class Visit:
    """An Appointment as the pages show it."""

    id: str
    status: str
    start: dt.datetime
    end: dt.datetime
    mode: str
    service: str
    patient: str | None  # Patient id
    practitioner: str | None  # Practitioner id
    location: str | None  # Location id
    slot: str | None  # Slot id
    version: int

    @property
    def start_us(self) -> int:
        return to_us(self.start)

    @property
    def booked(self) -> bool:
        return self.status == "booked"


def visit_of(appt: dict[str, Any], version: int | None = None) -> Visit | None:
    """The Appointment as a ``Visit``; None when it has no start or end (a proposal, not a booking)."""
    if not appt.get("start") or not appt.get("end"):
        return None
    patient = practitioner = location = None
    for p in appt.get("participant") or []:
        ref = (p.get("actor") or {}).get("reference")
        patient = patient or ref_id(ref, "Patient")
        practitioner = practitioner or ref_id(ref, "Practitioner")
        location = location or ref_id(ref, "Location")
    slots = appt.get("slot") or []
    return Visit(
        id=appt["id"],
        status=appt.get("status", ""),
        start=parse_instant(appt["start"]),
        end=parse_instant(appt["end"]),
        mode=mode_of(appt),
        service=service_of(appt),
        patient=patient,
        practitioner=practitioner,
        location=location,
        slot=ref_id(slots[0].get("reference"), "Slot") if slots else None,
        version=int(version if version is not None else (appt.get("meta") or {}).get("versionId", 1)),
    )


@dataclass(frozen=True)
class Opening:
    """A Slot as the pages show it."""

    id: str
    status: str
    start: dt.datetime
    end: dt.datetime
    mode: str
    service: str
    location: str | None  # Location id the Slot names (in-person slots added at the desk)
    comment: str
    version: int

    @property
    def free(self) -> bool:
        return self.status == "free"


def opening_of(slot: dict[str, Any]) -> Opening:
    location = None
    for ext in slot.get("extension") or []:
        if ext.get("url") == SLOT_LOCATION_EXT:
            location = ref_id((ext.get("valueReference") or {}).get("reference"), "Location")
    return Opening(
        id=slot["id"],
        status=slot.get("status", ""),
        start=parse_instant(slot["start"]),
        end=parse_instant(slot["end"]),
        mode=mode_of(slot),
        service=service_of(slot),
        location=location,
        comment=str(slot.get("comment") or ""),
        version=int((slot.get("meta") or {}).get("versionId", 1)),
    )


def reminder_offsets(setting: str) -> list[int]:
    """``HOUSECALL_REMINDER_HOURS`` ("24,2") as whole hours, largest first; nonsense is ignored."""
    hours = set()
    for part in setting.split(","):
        part = part.strip()
        if part.isdigit() and 0 < int(part) <= 24 * 14:
            hours.add(int(part))
    return sorted(hours, reverse=True)


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def day_bounds(day: dt.date, days: int, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """The instants where ``day`` starts and ``days`` days later ends, in the clinic's zone."""
    zone = ZoneInfo(tz)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=days), dt.time(), zone)
    return start, end


def iso_utc(moment: dt.datetime) -> str:
    """A search value: the instant in UTC with ``Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
