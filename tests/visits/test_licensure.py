"""Licensure at check-in: a clinician may only see a patient who is, right now, in a state where
the clinician holds a current licence (Practitioner.qualification, as demo/generate.py writes it).
Otherwise the visit cannot start: the page says so and offers to book again, the socket does not
open, and a clinician cannot admit."""

from __future__ import annotations

import datetime as dt

from housecall.demo.generate import demo_bundle
from housecall.visits import service
from tests.clinic import text_of
from tests.visits.conftest import Booked, close_code, connect, cookie_of, license_, license_clinician


def test_licence_states_follow_the_demo_generator_and_the_period() -> None:
    today = dt.date(2026, 11, 27)
    prac = {
        "qualification": [
            license_("VT"),
            license_("ME", end="2026-11-26"),
            license_("NH", start="2026-12-01"),
        ]
    }
    assert service.license_states(prac, today) == {"VT"}  # ME lapsed yesterday, NH not valid yet
    # The demo organization's clinicians: every licence the generator wrote is read, and its
    # deliberately lapsed one is not counted.
    bundle = demo_bundle(today=today)
    practitioners = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner"
    ]
    states = [service.license_states(p, today) for p in practitioners]
    assert all(s <= {"VT", "ME"} for s in states) and any(s == {"VT", "ME"} for s in states)
    written = sum(len(p.get("qualification", [])) for p in practitioners)
    current = sum(len(s) for s in states)
    assert written == current + 1  # the one lapsed VT licence


async def test_a_patient_in_an_unlicensed_state_cannot_start_the_visit(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    r = await booked.check_in("ME", "802-555-0100")  # Dr Carter is licensed in Vermont only
    assert r.status_code == 303
    page = await c.browsers["patient"].get(f"/visits/{appt}")
    text = text_of(page.text)
    assert "This visit cannot start while you are in Maine" in text
    assert 'href="/portal/appointments/book"' in page.text
    assert 'id="visit"' not in page.text  # no call on the page
    # The server refuses too: the socket closes with "not licensed", and admitting fails.
    assert await close_code(live, appt, cookie_of(c, "patient")) == 4451
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor:
        await doctor.next("welcome")
        lobby = await doctor.next("lobby")
        assert [m["role"] for m in lobby["members"]] == ["clinician"]  # nobody waiting to admit
    found = await c.search("Encounter", [("appointment", f"Appointment/{appt}")])
    assert found[0]["status"] == "arrived"
    # The patient corrects the state: now the visit can go ahead.
    assert (await booked.check_in("VT", "802-555-0100")).status_code == 303
    page = await c.browsers["patient"].get(f"/visits/{appt}")
    assert 'id="visit"' in page.text and "This visit cannot start while" not in page.text
    assert await close_code(live, appt, cookie_of(c, "patient")) is None


async def test_admission_checks_the_licence_again(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in("VT")).status_code == 303
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
        who = (await patient.next("welcome"))["you"]
        await doctor.next("welcome")
        # The licence lapses while the patient waits (the board's record was updated).
        await license_clinician(c, license_("VT", end="2020-12-31"))
        await doctor.send(type="admit", who=who)
        assert (await doctor.next("error")) == {"type": "error", "code": "unlicensed", "refused": "admit"}
        assert [m for m in await patient.drain() if m["type"] == "admitted"] == []
        await patient.send(type="chat", text="hello?")
        assert (await patient.next("error"))["code"] == "not-admitted"


async def test_check_in_errors_are_shown_beside_the_fields(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    r = await booked.check_in("XX", "call me")
    assert r.status_code == 400
    assert 'aria-invalid="true"' in r.text and "Choose the state you are in right now." in r.text
    assert "Enter a phone number we can call" in r.text and 'value="call me"' in r.text
    assert await c.search("Encounter", [("appointment", f"Appointment/{appt}")]) == []
    # Staff do not check in for the patient.
    r = await c.form_post("nurse", f"/visits/{appt}/checkin", {"state": "VT", "phone": "802-555-0100"},
                          form_from="/workspace")  # fmt: skip
    assert r.status_code == 403


async def test_the_check_in_page_speaks_spanish(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    browser = c.browsers["patient"]
    spanish = {"Accept-Language": "es-US,es;q=0.9"}
    page = text_of((await browser.get(f"/visits/{appt}", headers=spanish)).text)
    assert "¿En qué estado de EE. UU. está usted ahora mismo?" in page and "Registrar llegada" in page
    assert (await booked.check_in("ME")).status_code == 303
    page = text_of((await browser.get(f"/visits/{appt}", headers=spanish)).text)
    assert "Esta visita no puede empezar mientras usted esté en Maine" in page
