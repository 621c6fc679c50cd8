""" "Call me by phone instead": the visit becomes a phone visit, an urgent callback Task with the
number and the visit's context reaches the care team's inbox, everyone in the call is told, and the
Encounter's modality history keeps video → audio → phone with who changed it."""

from __future__ import annotations

from housecall.visits import service
from housecall.workspace import inbox
from tests.clinic import text_of
from tests.visits.conftest import Booked, connect, cookie_of


async def test_phone_instead_opens_an_urgent_callback_and_records_the_modality(
    booked: Booked, live: str
) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in("VT", "802-555-0142")).status_code == 303
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
        who = (await patient.next("welcome"))["you"]
        await doctor.next("welcome")
        await doctor.send(type="admit", who=who)
        await patient.next("admitted")
        # Video is struggling: the patient goes to audio only first (recorded, told to the clinician).
        await patient.send(type="state", data={"audio": True, "video": False, "mode": "audio"})
        state = await doctor.next("state")
        assert state["data"] == {"audio": True, "video": False, "mode": "audio"} and state["from"] == who
        # Then asks to be called: one form post, no script needed.
        page = await c.browsers["patient"].get(f"/visits/{appt}")
        assert "Call me by phone instead" in page.text and "802-555-0142" in page.text
        r = await c.form_post("patient", f"/visits/{appt}/phone", {}, form_from=f"/visits/{appt}")
        assert r.status_code == 303 and r.headers["location"] == f"/visits/{appt}"
        assert (await doctor.next("phone"))["by"] == f"Patient/{c.patient}"
        await patient.next("phone")

    encounter = (await c.search("Encounter", [("appointment", f"Appointment/{appt}")]))[0]
    history = service.modality_history(encounter)
    assert [h["mode"] for h in history] == ["video", "audio", "phone"]
    # The check-in started it with the booked mode; the patient changed it since.
    assert history[0]["by"] == history[1]["by"] == history[2]["by"] == f"Patient/{c.patient}"
    tasks = await c.search("Task", [("focus", f"Encounter/{encounter['id']}")])
    assert len(tasks) == 1
    task = tasks[0]
    assert (
        inbox.kind_of(task) == "callback" and task["priority"] == "urgent" and task["status"] == "requested"
    )
    assert "802-555-0142" in task["description"] and "virtual visit" in task["description"]
    assert task["for"]["reference"] == f"Patient/{c.patient}" and inbox.pool_of(task) == c.pool
    assert task["requester"]["reference"] == f"Patient/{c.patient}"
    # The care team sees it in the inbox; the visit page now says it is a phone visit.
    work = text_of((await c.browsers["nurse"].get("/workspace?kind=callback")).text)
    assert "Call 802-555-0142 now" in work and "Urgent" in work
    page = text_of((await c.browsers["patient"].get(f"/visits/{appt}")).text)
    assert "Your clinician will call you at 802-555-0142" in page
    # No more video signaling for the patient: the page has no call on it.
    assert 'id="visit"' not in (await c.browsers["patient"].get(f"/visits/{appt}")).text


async def test_the_clinician_can_switch_to_the_phone_with_a_new_number(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    # Before check-in there is no number to call.
    r = await c.form_post("clinician", f"/visits/{appt}/phone", {}, form_from="/workspace")
    assert r.status_code == 409 and "not checked in" in r.text
    assert (await booked.check_in("VT", "802-555-0100")).status_code == 303
    r = await c.form_post(
        "patient", f"/visits/{appt}/phone", {"phone": "+1 802 555 0199"}, form_from=f"/visits/{appt}"
    )
    assert r.status_code == 303
    encounter = (await c.search("Encounter", [("appointment", f"Appointment/{appt}")]))[0]
    assert service.Visit({"id": appt}, encounter).callback_phone == "+1 802 555 0199"
    task = (await c.search("Task", [("focus", f"Encounter/{encounter['id']}")]))[0]
    assert "+1 802 555 0199" in task["description"]
