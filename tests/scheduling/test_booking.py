"""Booking from real availability, moving, cancelling within the policy, the calendar file, and
who may see what (tests run on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import httpx

from housecall.identity.clock import clock
from housecall.scheduling import model
from tests.clinic import text_of
from tests.identity.conftest import CSRF
from tests.scheduling.conftest import AMB, Calendar, local

BOOK = "/portal/appointments/book"


def book_page(cal: Calendar) -> str:
    return f"{BOOK}?service_id={cal.service}&role={cal.role}"


async def book(cal: Calendar, slot: str, who: str = "patient") -> httpx.Response:
    return await cal.c.form_post(who, BOOK, {"service_id": cal.service, "role": cal.role, "slot": slot},
                                 form_from=book_page(cal))  # fmt: skip


def appointment_id(r: httpx.Response) -> str:
    assert r.status_code == 303, r.text[:500]
    match = re.match(r"^/portal/appointments/([A-Za-z0-9.-]+)\?done=", r.headers["location"])
    assert match, r.headers["location"]
    return match.group(1)


async def test_booking_steps_offer_only_clinicians_of_the_service_and_their_free_times(cal: Calendar) -> None:
    browser = cal.c.browsers["patient"]
    first = text_of((await browser.get(BOOK)).text)
    assert "Primary care visit" in first and "Skin check" in first
    assert "E-consult" not in first  # needs no appointment
    step2 = text_of((await browser.get(f"{BOOK}?service_id={cal.service}")).text)
    assert "Maya Carter" in step2 and "Sam Lee" not in step2
    step3 = (await browser.get(book_page(cal))).text
    # Three free times on the day, shown in the clinic's zone (10:00, 10:20, 10:40 New York time).
    for slot in cal.slots:
        assert f'value="{slot}"' in step3
    assert "10:00" in text_of(step3) and "10:40" in text_of(step3) and "America/New_York" in text_of(step3)
    # A blocked or busy slot is not offered; neither is another clinician's slot.
    blocked = await cal.slot(local(cal.day, 11), status="busy-unavailable")
    assert f'value="{blocked}"' not in (await browser.get(book_page(cal))).text


async def test_a_patient_books_a_slot_and_the_appointment_names_patient_clinician_and_place(
    cal: Calendar,
) -> None:
    c = cal.c
    appt_id = appointment_id(await book(cal, cal.slots[0]))
    appt = await c.read("Appointment", appt_id)
    assert appt["status"] == "booked"
    refs = {p["actor"]["reference"] for p in appt["participant"]}
    assert refs == {f"Patient/{c.patient}", f"Practitioner/{c.clinician}", f"Location/{cal.video_site}"}
    assert appt["slot"] == [{"reference": f"Slot/{cal.slots[0]}"}]
    assert model.parse_instant(appt["start"]) == local(cal.day, 10)
    assert model.mode_of(appt) == model.VIDEO
    assert (await c.read("Slot", cal.slots[0]))["status"] == "busy"
    # The patient's pages show it, with its mode and place; the slot is no longer offered.
    page = text_of((await c.browsers["patient"].get(f"/portal/appointments/{appt_id}?done=booked")).text)
    assert "Your appointment is booked." in page and "Video" in page and "Maya Carter" in page
    listing = text_of((await c.browsers["patient"].get("/portal/appointments")).text)
    assert "Maya Carter" in listing and "Upcoming" in listing
    assert f'value="{cal.slots[0]}"' not in (await c.browsers["patient"].get(book_page(cal))).text
    # The home page lists the upcoming video visit with a Join button to its page.
    home = (await c.browsers["patient"].get("/portal")).text
    assert f'href="/portal/appointments/{appt_id}">Join<' in home.replace("\n", "")
    # An in-person slot books the clinic's building as the place.
    in_person = await cal.slot(local(cal.day, 11), mode=AMB)
    appt2 = await c.read("Appointment", appointment_id(await book(cal, in_person)))
    assert f"Location/{cal.clinic_site}" in {p["actor"]["reference"] for p in appt2["participant"]}


async def test_a_slot_that_is_taken_or_not_the_clinicians_is_refused_and_nothing_is_written(
    cal: Calendar,
) -> None:
    c = cal.c
    appointment_id(await book(cal, cal.slots[0]))
    again = await book(cal, cal.slots[0])
    assert again.status_code == 409 and "no longer available" in text_of(again.text)
    lee_schedule = await c.create({"resourceType": "Schedule", "active": True,
                                   "actor": [{"reference": f"PractitionerRole/{cal.other_role}"}]})  # fmt: skip
    lees = await cal.slot(local(cal.day, 12), schedule=lee_schedule["id"])
    r = await book(cal, lees)
    assert r.status_code == 409
    assert (await c.read("Slot", lees))["status"] == "free"
    booked = await c.search("Appointment", [("patient", c.patient)])
    assert len(booked) == 1
    # A slot kept for another kind of visit is neither offered nor booked for this one.
    skin = await cal.slot(local(cal.day, 13), service="Skin check")
    assert f'value="{skin}"' not in (await c.browsers["patient"].get(book_page(cal))).text
    assert (await book(cal, skin)).status_code == 409
    assert (await c.read("Slot", skin))["status"] == "free"
    # A slot in the past cannot be booked.
    past = await cal.slot(dt.datetime.fromtimestamp(clock.now(), dt.UTC) - dt.timedelta(hours=1))
    assert (await book(cal, past)).status_code == 409


async def test_two_people_booking_the_same_slot_exactly_one_wins(cal: Calendar) -> None:
    c = cal.c
    env = c.env
    ben = await env.account("patient", patient_id=c.other_patient)
    browser = env.client()
    assert (await env.signin(browser, ben.email, next="/portal")).status_code == 303
    c.browsers["ben"] = browser
    for slot in cal.slots:  # three races, so that interleavings vary
        tokens = {}
        for who in ("patient", "ben"):
            page = await c.browsers[who].get(book_page(cal))
            tokens[who] = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        results = await asyncio.gather(*(
            c.browsers[who].post(BOOK, data={"service_id": cal.service, "role": cal.role, "slot": slot,
                                             "csrf": tokens[who]})
            for who in ("patient", "ben")))  # fmt: skip
        codes = sorted(r.status_code for r in results)
        assert codes == [303, 409], [(r.status_code, text_of(r.text)[:200]) for r in results]
        loser = next(r for r in results if r.status_code == 409)
        assert "Please choose another" in text_of(loser.text)
        appts = await c.search("Appointment", [("slot", f"Slot/{slot}")])
        assert len(appts) == 1 and appts[0]["status"] == "booked"
        slot_now = await c.read("Slot", slot)
        assert slot_now["status"] == "busy" and slot_now["meta"]["versionId"] == "2"


async def test_a_patient_moves_a_visit_to_another_free_time(cal: Calendar) -> None:
    c = cal.c
    appt_id = appointment_id(await book(cal, cal.slots[0]))
    page = await c.browsers["patient"].get(f"/portal/appointments/{appt_id}/reschedule")
    assert f'value="{cal.slots[1]}"' in page.text and f'value="{cal.slots[0]}"' not in page.text
    r = await c.form_post("patient", f"/portal/appointments/{appt_id}/reschedule", {"slot": cal.slots[1]},
                          form_from=f"/portal/appointments/{appt_id}/reschedule")  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == f"/portal/appointments/{appt_id}?done=moved"
    appt = await c.read("Appointment", appt_id)
    assert appt["status"] == "booked" and appt["slot"] == [{"reference": f"Slot/{cal.slots[1]}"}]
    assert model.parse_instant(appt["start"]) == local(cal.day, 10, 20)
    assert (await c.read("Slot", cal.slots[0]))["status"] == "free"
    assert (await c.read("Slot", cal.slots[1]))["status"] == "busy"
    # Moving to a taken time changes nothing.
    other = appointment_id(await book(cal, cal.slots[2]))
    r = await c.form_post("patient", f"/portal/appointments/{appt_id}/reschedule", {"slot": cal.slots[2]},
                          form_from=f"/portal/appointments/{appt_id}/reschedule")  # fmt: skip
    assert r.status_code == 409
    assert (await c.read("Appointment", appt_id))["slot"] == [{"reference": f"Slot/{cal.slots[1]}"}]
    assert (await c.read("Appointment", other))["status"] == "booked"


async def test_cancel_within_the_policy_frees_the_slot_and_later_the_page_says_to_call(cal: Calendar) -> None:
    c = cal.c
    first = appointment_id(await book(cal, cal.slots[0]))
    r = await c.form_post("patient", f"/portal/appointments/{first}/cancel", {},
                          form_from=f"/portal/appointments/{first}")  # fmt: skip
    assert r.status_code == 303
    assert (await c.read("Appointment", first))["status"] == "cancelled"
    assert (await c.read("Slot", cal.slots[0]))["status"] == "free"
    listing = text_of((await c.browsers["patient"].get("/portal/appointments")).text)
    assert "Cancelled" in listing
    # Inside the 24-hour window: no cancel button, a note to call, and a forced POST is refused.
    soon = await cal.slot((dt.datetime.fromtimestamp(clock.now(), dt.UTC) + dt.timedelta(hours=10)).replace(
        microsecond=0))  # fmt: skip
    second = appointment_id(await book(cal, soon))
    page = await c.browsers["patient"].get(f"/portal/appointments/{second}")
    assert "Cancel this appointment" not in page.text
    assert "please call the clinic" in text_of(page.text)
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    late = await c.browsers["patient"].post(f"/portal/appointments/{second}/cancel", data={"csrf": token})
    assert late.status_code == 409 and "Please call the clinic" in text_of(late.text)
    moved = await c.browsers["patient"].post(f"/portal/appointments/{second}/reschedule",
                                             data={"csrf": token, "slot": cal.slots[2]})  # fmt: skip
    assert moved.status_code == 409
    assert (await c.read("Appointment", second))["status"] == "booked"
    assert (await c.read("Slot", soon))["status"] == "busy"


async def test_the_calendar_file_has_the_visit_in_utc_and_no_health_information(cal: Calendar) -> None:
    c = cal.c
    appt_id = appointment_id(await book(cal, cal.slots[0]))
    r = await c.browsers["patient"].get(f"/portal/appointments/{appt_id}/calendar.ics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
    body = r.text
    assert body.startswith("BEGIN:VCALENDAR\r\n") and body.endswith("END:VCALENDAR\r\n")
    assert all(len(line.encode()) <= 75 for line in body.split("\r\n"))  # folded (RFC 5545 3.1)
    lines = dict(line.split(":", 1) for line in body.replace("\r\n ", "").split("\r\n") if ":" in line)
    assert lines["UID"] == f"appointment-{appt_id}@testserver"
    start_utc = local(cal.day, 10).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    assert lines["DTSTART"] == start_utc
    assert lines["DTEND"] == local(cal.day, 10, 20).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    assert lines["STATUS"] == "CONFIRMED"
    assert "Video visit" in lines["SUMMARY"] and "Test Health" in lines["SUMMARY"]
    assert "Carter" not in body and "Reyes" not in body and "Ana" not in body  # no names
    assert lines["URL"] == f"https://testserver/portal/appointments/{appt_id}"


async def test_another_patients_appointment_answers_404_and_staff_cannot_use_portal_pages(
    cal: Calendar,
) -> None:
    c = cal.c
    theirs = await c.create({
        "resourceType": "Appointment", "status": "booked", "start": local(cal.day, 15).isoformat(),
        "end": local(cal.day, 15, 20).isoformat(),
        "participant": [{"actor": {"reference": f"Patient/{c.other_patient}"}, "status": "accepted"},
                        {"actor": {"reference": f"Practitioner/{c.clinician}"}, "status": "accepted"}]})  # fmt: skip
    browser = c.browsers["patient"]
    for path in ("", "/calendar.ics", "/reschedule"):
        assert (await browser.get(f"/portal/appointments/{theirs['id']}{path}")).status_code == 404
    token = CSRF.search((await browser.get("/portal/appointments")).text).group(1)  # type: ignore[union-attr]
    r = await browser.post(f"/portal/appointments/{theirs['id']}/cancel", data={"csrf": token})
    assert r.status_code == 404
    assert (await c.read("Appointment", theirs["id"]))["status"] == "booked"
    assert "Other" not in text_of((await browser.get("/portal/appointments")).text)
    # Patients still may not write Appointments or Slots over the FHIR API: only through booking.
    api = await browser.put(f"/fhir/Slot/{cal.slots[0]}", json={**(await c.read("Slot", cal.slots[0])),
                                                                 "status": "busy"})  # fmt: skip
    assert api.status_code in (401, 403)
    assert (await c.read("Slot", cal.slots[0]))["status"] == "free"
