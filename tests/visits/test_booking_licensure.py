"""Booking a video or phone visit offers only clinicians licensed in the state the patient will be
in (their home address, or the state they pick), in the portal and at the front desk; a crafted
request for an unlicensed clinician's time is refused and writes nothing; in-person visits are
unaffected. Interpreters are asked for at booking and the care team sees the request."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from housecall.visits import before
from tests.clinic import text_of
from tests.scheduling.conftest import AMB, Calendar, cal, license_in, local, update, worker_settings  # noqa: F401
from tests.visits.conftest import Booked, book, license_, license_clinician, system_update

BOOK = "/portal/appointments/book"


@dataclass
class Two:
    cal: Calendar
    lee_role: str  # Dr Lee: licensed in Maine only, offers the same service
    lee: str  # Practitioner id
    video: list[str]  # Dr Lee's free video slots
    in_person: str  # Dr Lee's free in-person slot


@pytest.fixture
async def two(cal: Calendar) -> Two:  # noqa: F811
    c = cal.c
    lee = await c.create({"resourceType": "Practitioner", "name": [{"given": ["Priya"], "family": "Lee"}]})
    await license_in(c, lee["id"], "ME")
    role = await c.create({"resourceType": "PractitionerRole", "active": True,
                           "practitioner": {"reference": f"Practitioner/{lee['id']}"},
                           "location": [{"reference": f"Location/{cal.clinic_site}"}],
                           "healthcareService": [{"reference": f"HealthcareService/{cal.service}"}]})  # fmt: skip
    sched = await c.create({"resourceType": "Schedule", "active": True,
                            "actor": [{"reference": f"PractitionerRole/{role['id']}"}]})  # fmt: skip
    video = [await cal.slot(local(cal.day, 14, m), schedule=sched["id"]) for m in (0, 20)]
    in_person = await cal.slot(local(cal.day, 15), schedule=sched["id"], mode=AMB)
    return Two(cal, role["id"], lee["id"], video, in_person)


def page_of(two: Two, role: str, state: str = "") -> str:
    return f"{BOOK}?service_id={two.cal.service}&role={role}" + (f"&state={state}" if state else "")


async def test_the_portal_offers_video_times_only_of_clinicians_licensed_where_the_patient_will_be(
    two: Two,
) -> None:
    browser = two.cal.c.browsers["patient"]
    # The patient lives in Vermont: Dr Carter (VT) is offered for video; Dr Lee (ME) in person only.
    step1 = (await browser.get(BOOK)).text
    assert "Where will you be during the visit?" in text_of(step1)
    assert '<option value="VT" selected>' in step1  # the home address's state is assumed
    step2 = (await browser.get(f"{BOOK}?service_id={two.cal.service}")).text
    licensed, in_person = step2.split('label="In person only (not licensed in Vermont)"')
    assert (
        'label="Video, phone, chat or in person (licensed in Vermont)"' in licensed
        and "Maya Carter" in licensed
    )
    assert "Priya Lee · in person only" in in_person and "Maya Carter" not in in_person
    lee_page = (await browser.get(page_of(two, two.lee_role))).text
    assert all(f'value="{s}"' not in lee_page for s in two.video)  # her video times are not offered
    assert f'value="{two.in_person}"' in lee_page  # an in-person visit is unaffected
    assert "Priya Lee is not licensed in Vermont: only in-person times are shown." in text_of(lee_page)
    # The patient will be in Maine that day: now Dr Lee's video times are offered, Dr Carter's not.
    maine = (await browser.get(page_of(two, two.lee_role, "ME"))).text
    assert all(f'value="{s}"' in maine for s in two.video) and 'name="state" value="ME"' in maine
    carter_in_maine = (await browser.get(page_of(two, two.cal.role, "ME"))).text
    assert all(f'value="{s}"' not in carter_in_maine for s in two.cal.slots)


async def test_a_crafted_booking_of_an_unlicensed_clinician_is_refused_and_writes_nothing(two: Two) -> None:
    c = two.cal.c
    data = {"service_id": two.cal.service, "role": two.lee_role, "slot": two.video[0]}
    r = await c.form_post("patient", BOOK, data, form_from=page_of(two, two.lee_role))
    assert r.status_code == 409
    assert "Priya Lee is not licensed in Vermont" in text_of(r.text)
    r = await c.form_post("patient", BOOK, {**data, "state": "XX"}, form_from=page_of(two, two.lee_role))
    assert r.status_code == 409 and "Choose the state you will be in during the visit." in text_of(r.text)
    assert (await c.read("Slot", two.video[0]))["status"] == "free"
    assert await c.search("Appointment", [("patient", c.patient)]) == []
    # Saying where they will be (Maine) books it, and the Appointment keeps that state.
    r = await c.form_post(
        "patient", BOOK, {**data, "state": "ME"}, form_from=page_of(two, two.lee_role, "ME")
    )
    assert r.status_code == 303, text_of(r.text)[:300]
    (appt,) = await c.search("Appointment", [("patient", c.patient)])
    assert before.planned_state(appt) == "ME"
    # In person needs no licence where the patient lives.
    r = await c.form_post(
        "patient", BOOK, {**data, "slot": two.in_person}, form_from=page_of(two, two.lee_role)
    )
    assert r.status_code == 303


async def test_without_a_home_address_the_patient_must_say_where_they_will_be(two: Two) -> None:
    c = two.cal.c
    patient = await c.read("Patient", c.patient)
    patient.pop("address")
    await update(c, patient)
    page = (await c.browsers["patient"].get(page_of(two, two.cal.role))).text
    assert all(f'value="{s}"' not in page for s in two.cal.slots)  # no video times until a state is known
    assert "Tell us which state you will be in to see video and phone times." in text_of(page)
    r = await c.form_post("patient", BOOK, {"service_id": two.cal.service, "role": two.cal.role,
                                            "slot": two.cal.slots[0]}, form_from=page_of(two, two.cal.role))  # fmt: skip
    assert r.status_code == 409 and "Choose the state you will be in during the visit." in text_of(r.text)
    assert 'href="#state"' in r.text and 'id="state"' in r.text  # the error leads to the field


async def test_the_front_desk_cannot_book_an_unlicensed_clinicians_video_time(two: Two) -> None:
    c, cal_ = two.cal.c, two.cal
    find = f"/desk/book?slot={two.video[0]}&role={two.lee_role}&day={cal_.day.isoformat()}&view=day&q=Reyes"
    found = text_of((await c.browsers["desk"].get(find)).text)
    assert "Ana Reyes" in found and "Vermont · not licensed there" in found
    assert "Priya Lee is licensed in: Maine." in found
    data = {"slot": two.video[0], "role": two.lee_role, "patient": c.patient, "service_id": cal_.service,
            "q": "Reyes", "day": cal_.day.isoformat(), "view": "day"}  # fmt: skip
    r = await c.form_post("desk", "/desk/book", data, form_from=find)
    assert r.status_code == 409 and "Priya Lee is not licensed in Vermont" in text_of(r.text)
    assert (await c.read("Slot", two.video[0]))["status"] == "free"
    r = await c.form_post("desk", "/desk/book", {**data, "state": "ME", "interpreter": "vi"}, form_from=find)
    assert r.status_code == 303
    (appt,) = await c.search("Appointment", [("patient", c.patient)])
    assert before.planned_state(appt) == "ME" and before.interpreter_code(appt) == "vi"


async def test_an_interpreter_is_requested_when_booking_and_kept_on_the_appointment(two: Two) -> None:
    c = two.cal.c
    data = {"service_id": two.cal.service, "role": two.cal.role, "slot": two.cal.slots[0]}
    r = await c.form_post(
        "patient", BOOK, {**data, "interpreter": "klingon"}, form_from=page_of(two, two.cal.role)
    )
    assert r.status_code == 409 and "Choose a language from the list." in text_of(r.text)
    page = (await c.browsers["patient"].get(page_of(two, two.cal.role))).text
    assert "Do you need an interpreter?" in text_of(page) and '<option value="es">Spanish</option>' in page
    r = await c.form_post(
        "patient", BOOK, {**data, "interpreter": "es"}, form_from=page_of(two, two.cal.role)
    )
    assert r.status_code == 303
    (appt,) = await c.search("Appointment", [("patient", c.patient)])
    (transl,) = [p for p in appt["participant"] if "actor" not in p]
    assert transl["type"][0]["coding"][0]["code"] == "TRANSL" and transl["status"] == "needs-action"
    assert transl["extension"][0]["valueCodeableConcept"]["coding"][0] == {
        "system": "urn:ietf:bcp:47", "code": "es", "display": "Spanish"}  # fmt: skip
    shown = text_of((await c.browsers["patient"].get(r.headers["location"])).text)
    assert "Interpreter requested: Spanish" in shown


async def test_the_care_team_sees_the_interpreter_request_and_the_intake_link(booked: Booked) -> None:
    c = booked.clinic
    appt = await c.read("Appointment", booked.appointment)
    appt["participant"].append(before.interpreter_participant("ase"))
    await system_update(c, appt)
    assert (await booked.check_in()).status_code == 303
    room = text_of((await c.browsers["clinician"].get("/workspace/visits")).text)
    assert "Interpreter requested: American Sign Language" in room and "Intake answers" in room
    visit = (await c.browsers["clinician"].get(f"/visits/{booked.appointment}")).text
    assert "Interpreter requested: American Sign Language" in text_of(visit)
    assert f'href="/visits/{booked.appointment}/intake"' in visit
    # A visit without a request says nothing about interpreters.
    other = await book(c, start_in=30)
    assert "Interpreter requested" not in text_of(
        (await c.browsers["clinician"].get(f"/visits/{other}")).text
    )


async def test_licence_states_drop_a_lapsed_licence_for_booking(two: Two) -> None:
    """The booking reads the same licences as check-in: a lapsed one does not count."""
    c = two.cal.c
    await license_clinician(c, license_("VT", end="2020-12-31"), license_("ME"))
    page = (await c.browsers["patient"].get(page_of(two, two.cal.role))).text
    assert all(f'value="{s}"' not in page for s in two.cal.slots)


async def test_moving_an_in_person_visit_to_an_unlicensed_video_time_is_refused(two: Two) -> None:
    c = two.cal.c
    data = {"service_id": two.cal.service, "role": two.lee_role, "slot": two.in_person}
    r = await c.form_post("patient", BOOK, data, form_from=page_of(two, two.lee_role))
    assert r.status_code == 303
    appt = r.headers["location"].split("?")[0].rsplit("/", 1)[1]
    move = f"/portal/appointments/{appt}/reschedule"
    assert f'value="{two.video[0]}"' not in (await c.browsers["patient"].get(move)).text  # not offered …
    r = await c.form_post("patient", move, {"slot": two.video[0]}, form_from=move)
    assert r.status_code == 409 and "Priya Lee is not licensed in Vermont" in text_of(r.text)  # … nor taken
    assert (await c.read("Slot", two.video[0]))["status"] == "free"
    assert (await c.read("Slot", two.in_person))["status"] == "busy"


async def test_check_in_starts_from_the_state_given_at_booking(booked: Booked) -> None:
    """The patient said at booking they would be in Maine: check-in offers Maine, to confirm."""
    c = booked.clinic
    appt = await c.read("Appointment", booked.appointment)
    appt.setdefault("extension", []).append(before.planned_state_ext("ME"))
    await system_update(c, appt)
    page = (await c.browsers["patient"].get(f"/visits/{booked.appointment}")).text
    assert '<option value="ME" selected' in page
    assert page.count(" selected") == 1
