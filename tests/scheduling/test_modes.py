"""Chat is a booking mode like video and phone (decision 0025): the front desk adds chat
availability, a patient books a chat time in the portal, the Appointment says chat (virtual, no
place), and the licensure rule of video and phone applies to it."""

from __future__ import annotations

import datetime as dt

from housecall.scheduling import model
from housecall.visits import before
from tests.clinic import text_of
from tests.scheduling.conftest import Calendar, license_in, local
from tests.scheduling.test_booking import BOOK, appointment_id, book, book_page
from tests.scheduling.test_desk import desk_page


async def test_the_desk_adds_chat_times_and_a_patient_books_one(cal: Calendar) -> None:
    c = cal.c
    day = cal.day + dt.timedelta(days=1)
    assert '<option value="chat"' in (await c.browsers["desk"].get(desk_page(cal, day))).text
    r = await c.form_post("desk", "/desk/schedule/availability", {
        "role": cal.role, "day": day.isoformat(), "start": "15:00", "end": "15:40", "minutes": "20",
        "mode": "chat", "location": "", "service_id": cal.service, "view": "day"},
        form_from=desk_page(cal, day))  # fmt: skip
    assert r.status_code == 303 and "n=2" in r.headers["location"], r.text[:300]
    slots = await c.search(
        "Slot", [("schedule", f"Schedule/{cal.schedule}"), ("start", f"ge{day.isoformat()}")]
    )
    made = sorted((model.parse_instant(s["start"]), s) for s in slots)
    assert [m[0] for m in made] == [local(day, 15), local(day, 15, 20)]
    assert all(model.mode_of(s) == model.CHAT for _t, s in made)
    codes = {(cd["system"], cd["code"]) for cd in made[0][1]["appointmentType"]["coding"]}
    assert codes == {(model.ACT_CODE, "VR"), (model.MODE_SYSTEM, "chat")}
    # The portal offers it among the licensed clinician's times, as "Chat".
    page = (await c.browsers["patient"].get(book_page(cal) + "&week=0&state=VT")).text
    assert f'value="{made[0][1]["id"]}"' in page and "Chat" in text_of(page)
    appt_id = appointment_id(await book(cal, made[0][1]["id"]))
    appt = await c.read("Appointment", appt_id)
    assert model.mode_of(appt) == model.CHAT and appt["appointmentType"]["text"] == "Chat visit"
    refs = {p["actor"]["reference"] for p in appt["participant"]}
    assert refs == {f"Patient/{c.patient}", f"Practitioner/{c.clinician}"}  # a chat visit is nowhere
    assert before.planned_state(appt) == "VT"
    shown = text_of((await c.browsers["patient"].get(f"/portal/appointments/{appt_id}")).text)
    assert "Chat" in shown and "you write to each other there" in shown


async def test_a_chat_time_needs_a_clinician_licensed_where_the_patient_will_be(cal: Calendar) -> None:
    c = cal.c
    chat = await cal.slot(local(cal.day, 16), mode=model.mode_concept(model.CHAT))
    await license_in(c, c.clinician, "ME")  # no longer licensed in Vermont, where the patient lives
    r = await c.form_post("patient", BOOK, {"service_id": cal.service, "role": cal.role, "slot": chat},
                          form_from=book_page(cal))  # fmt: skip
    assert r.status_code == 409 and "not licensed in Vermont" in text_of(r.text)
    assert (await c.read("Slot", chat))["status"] == "free"
    assert f'value="{chat}"' not in (await c.browsers["patient"].get(book_page(cal))).text
