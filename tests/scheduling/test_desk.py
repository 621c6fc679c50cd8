"""The front desk's schedule (availability, blocked time, booking and cancelling for a patient) and
the clinician's own day and week."""

from __future__ import annotations

import datetime as dt

from housecall.identity.clock import clock
from housecall.scheduling import model
from tests.clinic import text_of
from tests.identity.conftest import CSRF
from tests.scheduling.conftest import Calendar, local
from tests.scheduling.test_booking import appointment_id, book


def desk_page(cal: Calendar, day: dt.date | None = None, view: str = "day") -> str:
    return f"/desk/schedule?role={cal.role}&day={(day or cal.day).isoformat()}&view={view}"


async def test_front_desk_adds_availability_and_patients_can_book_it(cal: Calendar) -> None:
    c = cal.c
    day = cal.day + dt.timedelta(days=1)
    page = await c.browsers["desk"].get(desk_page(cal, day))
    assert page.status_code == 200 and "Maya Carter" in text_of(page.text)
    r = await c.form_post("desk", "/desk/schedule/availability", {
        "role": cal.role, "day": day.isoformat(), "start": "13:00", "end": "14:00", "minutes": "30",
        "mode": "in-person", "location": cal.clinic_site, "service_id": cal.service, "view": "day"},
        form_from=desk_page(cal, day))  # fmt: skip
    assert r.status_code == 303 and "done=added" in r.headers["location"] and "n=2" in r.headers["location"]
    slots = await c.search(
        "Slot", [("schedule", f"Schedule/{cal.schedule}"), ("start", f"ge{day.isoformat()}")]
    )
    made = sorted((model.parse_instant(s["start"]), s) for s in slots)
    assert [m[0] for m in made] == [local(day, 13), local(day, 13, 30)]
    assert made[0][1]["start"].endswith(("-05:00", "-04:00"))  # wall-clock time with the zone's offset
    assert all(model.mode_of(s) == model.IN_PERSON and s["status"] == "free" for _t, s in made)
    shown = text_of((await c.browsers["desk"].get(desk_page(cal, day))).text)
    assert "2 free times added." not in shown and "Free" in shown
    # Adding the same hour again makes no duplicates; a phone hour next to it adds only new times.
    r = await c.form_post("desk", "/desk/schedule/availability", {
        "role": cal.role, "day": day.isoformat(), "start": "13:00", "end": "15:00", "minutes": "30",
        "mode": "phone", "location": "", "service_id": "", "view": "day"}, form_from=desk_page(cal, day))  # fmt: skip
    assert r.status_code == 303 and "n=2" in r.headers["location"]
    # The patient books the new in-person time, at the clinic's building.
    appt = await c.read("Appointment", appointment_id(await book(cal, made[0][1]["id"])))
    assert f"Location/{cal.clinic_site}" in {p["actor"]["reference"] for p in appt["participant"]}


async def test_bad_availability_is_refused_with_the_field_marked(cal: Calendar) -> None:
    c = cal.c
    before = len(await c.search("Slot", [("schedule", f"Schedule/{cal.schedule}")]))
    for data, field in (
        ({"start": "14:00", "end": "13:00"}, "end"),
        ({"start": "9am"}, "start"),
        ({"day": "tomorrow"}, "day"),
        ({"mode": "in-person", "location": ""}, "location"),
        ({"minutes": "2"}, "minutes"),
        ({"day": "2001-01-01"}, "day"),
    ):
        form = {"role": cal.role, "day": cal.day.isoformat(), "start": "13:00", "end": "14:00", "minutes": "20",
                "mode": "video", "location": "", "service_id": "", "view": "day", **data}  # fmt: skip
        r = await c.form_post("desk", "/desk/schedule/availability", form, form_from=desk_page(cal))
        assert r.status_code == 400, data
        assert f'href="#{field}"' in r.text, (data, text_of(r.text)[:400])
    assert len(await c.search("Slot", [("schedule", f"Schedule/{cal.schedule}")])) == before


async def test_front_desk_blocks_a_time_books_for_a_patient_found_by_name_and_cancels(cal: Calendar) -> None:
    c = cal.c
    # Block the first slot: patients no longer see it; open it again.
    page = await c.browsers["desk"].get(desk_page(cal))
    r = await c.form_post("desk", f"/desk/slots/{cal.slots[0]}/block",
                          {"version": "1", "role": cal.role, "day": cal.day.isoformat(), "view": "day"},
                          form_from=desk_page(cal))  # fmt: skip
    assert r.status_code == 303 and (await c.read("Slot", cal.slots[0]))["status"] == "busy-unavailable"
    patient_view = (
        await c.browsers["patient"].get(f"/portal/appointments/book?service_id={cal.service}&role={cal.role}")
    ).text
    assert f'value="{cal.slots[0]}"' not in patient_view
    stale = await c.form_post("desk", f"/desk/slots/{cal.slots[0]}/open",
                              {"version": "1", "role": cal.role, "day": cal.day.isoformat(), "view": "day"},
                              form_from=desk_page(cal))  # fmt: skip
    assert stale.status_code == 409  # the version shown is not the current one
    r = await c.form_post("desk", f"/desk/slots/{cal.slots[0]}/open",
                          {"version": "2", "role": cal.role, "day": cal.day.isoformat(), "view": "day"},
                          form_from=desk_page(cal))  # fmt: skip
    assert r.status_code == 303 and (await c.read("Slot", cal.slots[0]))["status"] == "free"
    # Book the second slot for Ana, found by name; by birth date finds nobody here.
    find = f"/desk/book?slot={cal.slots[1]}&role={cal.role}&day={cal.day.isoformat()}&view=day"
    found = await c.browsers["desk"].get(find + "&q=Reyes")
    assert (
        found.status_code == 200
        and "Ana Reyes" in text_of(found.text)
        and "Ben Other" not in text_of(found.text)
    )
    nobody = await c.browsers["desk"].get(find + "&q=1999-12-31")
    assert "No patient matches" in text_of(nobody.text)
    r = await c.form_post("desk", "/desk/book", {"slot": cal.slots[1], "role": cal.role, "patient": c.patient,
                          "service_id": cal.service, "q": "Reyes", "day": cal.day.isoformat(), "view": "day"},
                          form_from=find + "&q=Reyes")  # fmt: skip
    assert r.status_code == 303 and "done=booked" in r.headers["location"]
    booked = await c.search("Appointment", [("patient", c.patient)])
    assert len(booked) == 1 and booked[0]["status"] == "booked"
    assert (await c.read("Slot", cal.slots[1]))["status"] == "busy"
    day = text_of((await c.browsers["desk"].get(desk_page(cal))).text)
    assert "Ana Reyes" in day and "Booked" in day
    # The patient sees it in the portal.
    assert "Maya Carter" in text_of((await c.browsers["patient"].get("/portal/appointments")).text)
    # A visit three hours away (inside the patients' 24-hour window): the desk may still cancel it.
    soon = await cal.slot((dt.datetime.fromtimestamp(clock.now(), dt.UTC) + dt.timedelta(hours=3)).replace(
        microsecond=0))  # fmt: skip
    late = appointment_id(await book(cal, soon))
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = await c.browsers["desk"].post(f"/desk/appointments/{late}/cancel",
                                      data={"csrf": token, "role": cal.role, "day": cal.day.isoformat()})  # fmt: skip
    assert r.status_code == 303
    assert (await c.read("Appointment", late))["status"] == "cancelled"
    assert (await c.read("Slot", soon))["status"] == "free"


async def test_desk_cancels_and_patients_cannot_reach_desk_pages(cal: Calendar) -> None:
    c = cal.c
    appt_id = appointment_id(await book(cal, cal.slots[0]))
    page = await c.browsers["desk"].get(desk_page(cal))
    assert f"/desk/appointments/{appt_id}/cancel" in page.text
    r = await c.form_post("desk", f"/desk/appointments/{appt_id}/cancel",
                          {"role": cal.role, "day": cal.day.isoformat(), "view": "day"}, form_from=desk_page(cal))  # fmt: skip
    assert r.status_code == 303 and "done=cancelled" in r.headers["location"]
    assert (await c.read("Appointment", appt_id))["status"] == "cancelled"
    assert (await c.read("Slot", cal.slots[0]))["status"] == "free"
    # Patients, clinicians and nurses are refused every front-desk page and action.
    for who in ("patient", "clinician", "nurse"):
        browser = c.browsers[who]
        token = CSRF.search((await browser.get("/account")).text).group(1)  # type: ignore[union-attr]
        assert (await browser.get(desk_page(cal))).status_code == 403, who
        assert (
            await browser.get(f"/desk/book?slot={cal.slots[1]}&role={cal.role}&q=Reyes")
        ).status_code == 403
        for path, data in (
            ("/desk/schedule/availability", {"role": cal.role, "day": cal.day.isoformat(), "start": "13:00",
                                             "end": "14:00", "minutes": "20", "mode": "video"}),
            (f"/desk/slots/{cal.slots[1]}/block", {"version": "1"}),
            ("/desk/book", {"slot": cal.slots[1], "role": cal.role, "patient": c.patient, "service_id": cal.service}),
        ):  # fmt: skip
            r = await browser.post(path, data={**data, "csrf": token})
            assert r.status_code == 403, (who, path)
    assert (await c.read("Slot", cal.slots[1]))["status"] == "free"
    assert len(await c.search("Appointment", [("patient", c.patient), ("status", "booked")])) == 0


async def test_the_clinician_sees_their_day_and_week_with_free_and_booked_times(cal: Calendar) -> None:
    c = cal.c
    appointment_id(await book(cal, cal.slots[0]))
    day = await c.browsers["clinician"].get(f"/workspace/schedule?day={cal.day.isoformat()}&view=day")
    assert day.status_code == 200
    shown = text_of(day.text)
    assert "Ana Reyes" in shown and "Free" in shown and "10:00" in shown and "10:40" in shown
    week = text_of(
        (await c.browsers["clinician"].get(f"/workspace/schedule?day={cal.day.isoformat()}&view=week")).text
    )
    assert "Ana Reyes" in week and "Show one day" in week
    # Another day has nothing; the nurse sees her own (empty) day, not Dr Carter's; patients are refused.
    empty = text_of((await c.browsers["clinician"].get("/workspace/schedule?day=2030-01-07")).text)
    assert "Nothing on this day." in empty
    nurse = text_of((await c.browsers["nurse"].get(f"/workspace/schedule?day={cal.day.isoformat()}")).text)
    assert "Nothing on this day." in nurse and "Ana Reyes" not in nurse
    assert (await c.browsers["patient"].get("/workspace/schedule")).status_code == 403
