"""Scheduling tests run in the small clinic (tests/clinic.py), with a bookable service, two
clinicians' calendars and a job worker that mails through the test's SMTP server."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from housecall.access.policy import Access
from housecall.core import jobs
from housecall.core.settings import get_settings
from housecall.fhir import interactions as ix
from housecall.identity.clock import clock
from housecall.visits import service as visits
from tests.clinic import Clinic, clinic  # noqa: F401
from tests.identity.conftest import Mailbox, _clock_back, env, smtp  # noqa: F401

TZ = "America/New_York"
VR = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"}],
    "text": "Video visit",
}
AMB = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}],
    "text": "In-person",
}


@pytest.fixture
def worker_settings(monkeypatch: pytest.MonkeyPatch, smtp: tuple[Mailbox, int]) -> Iterator[None]:  # noqa: F811
    """The job handlers read settings from the environment, as ``housecall worker`` does."""
    monkeypatch.setenv("HOUSECALL_SMTP_PORT", str(smtp[1]))
    monkeypatch.setenv("HOUSECALL_PUBLIC_URL", "https://testserver")
    for name in list(os.environ):
        if name.startswith("HOUSECALL_REMINDER") or name.startswith("HOUSECALL_CANCEL"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def run_worker(c: Clinic) -> int:
    """Run the job queue until nothing is due (a worker's passes); returns how many jobs ran."""
    total = 0
    while ran := await jobs.work_once(c.env.db):
        total += ran
    return total


def local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), ZoneInfo(TZ))


def future_weekday(days: int = 3) -> dt.date:
    """A weekday at least ``days`` days after the (test) clock's today in the clinic."""
    day = dt.datetime.fromtimestamp(clock.now(), ZoneInfo(TZ)).date() + dt.timedelta(days=days)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


@dataclass
class Calendar:
    c: Clinic
    service: str  # HealthcareService "Primary care visit"
    other_service: str  # a service Dr Carter does not offer
    role: str  # Dr Carter's PractitionerRole offering the service
    other_role: str  # Dr Lee's role: the other service only
    clinic_site: str  # Location "Burlington clinic"
    video_site: str  # the virtual Location
    schedule: str
    day: dt.date
    slots: list[str] = field(default_factory=list)  # Dr Carter's free video slots on `day`, 10:00 on

    async def slot(self, start: dt.datetime, minutes: int = 20, mode: dict[str, Any] = VR,
                   schedule: str | None = None, status: str = "free", service: str = "Primary care visit") -> str:  # fmt: skip
        made = await self.c.create({
            "resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule or self.schedule}"},
            "status": status, "start": start.isoformat(), "end": (start + dt.timedelta(minutes=minutes)).isoformat(),
            "appointmentType": mode, "serviceType": [{"text": service}]})  # fmt: skip
        return str(made["id"])


async def update(c: Clinic, resource: dict[str, Any]) -> dict[str, Any]:
    """Store a new version as the organization's system (test set-up)."""
    async with c.env.db.transaction() as conn:
        ctx = ix.Ctx(conn, c.env.settings, "https://testserver/fhir", Access.system(c.env.org_id))
        out = await ix.update(ctx, resource["resourceType"], resource["id"], resource)
    assert out.stored is not None
    return out.stored.resource()


def licence(state: str) -> dict[str, Any]:
    """A current state licence the way demo/generate.py writes one."""
    return {"extension": [{"url": visits.LICENSE_STATE_EXT,
                           "valueCodeableConcept": {"coding": [{"system": visits.USPS, "code": state}]}}],
            "code": {"text": "State medical license"}, "period": {"start": "2020-01-01", "end": "2099-12-31"}}  # fmt: skip


async def license_in(c: Clinic, practitioner: str, *states: str) -> None:
    prac = await c.read("Practitioner", practitioner)
    prac["qualification"] = [licence(s) for s in states]
    await update(c, prac)


@pytest.fixture
async def cal(clinic: Clinic) -> Calendar:  # noqa: F811
    c = clinic
    # Video visits need a clinician licensed where the patient is (decision 0020): Dr Carter holds a
    # Vermont licence and both patients live in Vermont.
    await license_in(c, c.clinician, "VT")
    for pid in (c.patient, c.other_patient):
        patient = await c.read("Patient", pid)
        patient["address"] = [{"use": "home", "city": "Burlington", "state": "VT", "postalCode": "05401"}]
        await update(c, patient)
    svc = await c.create({"resourceType": "HealthcareService", "active": True, "name": "Primary care visit",
                          "appointmentRequired": True, "type": [{"text": "Primary care visit"}]})  # fmt: skip
    other_svc = await c.create({"resourceType": "HealthcareService", "active": True, "name": "Skin check",
                                "appointmentRequired": True})  # fmt: skip
    await c.create({"resourceType": "HealthcareService", "active": True, "name": "E-consult",
                    "appointmentRequired": False})  # fmt: skip
    site = await c.create({"resourceType": "Location", "status": "active", "name": "Burlington clinic",
                           "mode": "instance"})  # fmt: skip
    video = await c.create({"resourceType": "Location", "status": "active", "name": "Virtual clinic", "mode": "kind",
                            "physicalType": {"coding": [{"code": "vi"}]}})  # fmt: skip
    role = await c.create({"resourceType": "PractitionerRole", "active": True,
                           "practitioner": {"reference": f"Practitioner/{c.clinician}"},
                           "location": [{"reference": f"Location/{site['id']}"}, {"reference": f"Location/{video['id']}"}],
                           "healthcareService": [{"reference": f"HealthcareService/{svc['id']}"}]})  # fmt: skip
    lee = await c.create({"resourceType": "Practitioner", "name": [{"given": ["Sam"], "family": "Lee"}]})
    other_role = await c.create({"resourceType": "PractitionerRole", "active": True,
                                 "practitioner": {"reference": f"Practitioner/{lee['id']}"},
                                 "healthcareService": [{"reference": f"HealthcareService/{other_svc['id']}"}]})  # fmt: skip
    sched = await c.create({"resourceType": "Schedule", "active": True,
                            "actor": [{"reference": f"PractitionerRole/{role['id']}"},
                                      {"reference": f"Location/{site['id']}"}]})  # fmt: skip
    out = Calendar(c, svc["id"], other_svc["id"], role["id"], other_role["id"], site["id"], video["id"], sched["id"],
                   future_weekday())  # fmt: skip
    for minute in (0, 20, 40):
        out.slots.append(await out.slot(local(out.day, 10, minute)))
    return out
