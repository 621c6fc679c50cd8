"""An ended video visit made through the service layer (check-in from Vermont, admission, hang-up),
for tests of what comes after it: the page walk (tests/e2e/test_accessibility.py) and the after-visit
tests."""

from __future__ import annotations

import datetime as dt

from housecall.access.policy import Access
from housecall.fhir import interactions as ix
from housecall.visits import service
from housecall.web.records import Records
from tests.clinic import Clinic
from tests.visits.conftest import license_


async def ended_visit(c: Clinic, *, minutes_ago: float = 30) -> tuple[str, str]:
    """A video visit of the clinic's patient with Dr Carter (licensed in Vermont for it) that took
    place ``minutes_ago`` and ended. Returns (Appointment id, Encounter id)."""
    start = service.now_dt() - dt.timedelta(minutes=minutes_ago)
    async with c.env.db.transaction() as conn:
        rec = Records(ix.Ctx(conn, c.env.settings, "https://testserver/fhir", Access.system(c.env.org_id)))
        practitioner = await rec.read("Practitioner", c.clinician)
        assert practitioner is not None
        if "VT" not in service.license_states(practitioner, start.date()):
            practitioner["qualification"] = [*practitioner.get("qualification", []), license_("VT")]
            await rec.update(practitioner)
        appt = await rec.create("Appointment", {
            "resourceType": "Appointment", "status": "booked",
            "appointmentType": {"coding": [{"system": service.ACT_CODE, "code": "VR", "display": "virtual"}]},
            "start": service.iso(start), "end": service.iso(start + dt.timedelta(minutes=20)), "minutesDuration": 20,
            "participant": [{"actor": {"reference": f"Patient/{c.patient}"}, "status": "accepted"},
                            {"actor": {"reference": f"Practitioner/{c.clinician}"}, "status": "accepted"}],
        })  # fmt: skip
        visit = await service.load_visit(rec, appt["id"])
        assert visit is not None
        await service.check_in(rec, visit, state="VT", phone="802-555-0100")
        await service.admit(rec, visit, by=f"Practitioner/{c.clinician}")
        await service.end_visit(rec, visit)
        assert visit.encounter is not None
        return str(appt["id"]), str(visit.encounter["id"])
