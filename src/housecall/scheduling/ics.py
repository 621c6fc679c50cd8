"""An appointment as an iCalendar file (RFC 5545) for the patient's own calendar.

A calendar file leaves Housecall and is synced to phones and other people's screens, so it says
only what the patient would put there themself: the kind of visit and the clinic's name, the time
(in UTC, so no time-zone tables are needed), and the link to the appointment in the portal. No
clinician, no reason for the visit, no diagnosis.
"""

from __future__ import annotations

import datetime as dt

from housecall.scheduling.model import Visit


def _text(value: str) -> str:
    """Escape TEXT (RFC 5545 3.3.11)."""
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _fold(line: str) -> str:
    """Lines longer than 75 octets are folded (RFC 5545 3.1)."""
    raw = line.encode()
    if len(raw) <= 75:
        return line
    parts: list[str] = []
    chunk = b""
    for ch in line:
        b = ch.encode()
        if len(chunk) + len(b) > (75 if not parts else 74):
            parts.append(chunk.decode())
            chunk = b""
        chunk += b
    parts.append(chunk.decode())
    return "\r\n ".join(parts)


def calendar(v: Visit, *, summary: str, clinic: str, url: str, host: str, stamp: dt.datetime) -> str:
    """One VEVENT. ``UID`` is the appointment's (stable: a calendar that imports the file again
    after a reschedule updates the event instead of adding a second one); ``SEQUENCE`` is its
    version, so the newer file wins; a cancelled appointment is ``STATUS:CANCELLED``."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Housecall//Appointments//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:appointment-{v.id}@{host}",
        f"SEQUENCE:{v.version}",
        f"DTSTAMP:{_utc(stamp)}",
        f"DTSTART:{_utc(v.start)}",
        f"DTEND:{_utc(v.end)}",
        f"SUMMARY:{_text(summary)}",
        f"LOCATION:{_text(clinic)}",
        f"URL:{url}",
        f"STATUS:{'CONFIRMED' if v.booked else 'CANCELLED'}",
        "TRANSP:OPAQUE",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"
