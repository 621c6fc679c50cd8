"""Phone-only and chat-only visits (decision 0025): the modality history starts at check-in with the
booked mode, the waiting room holds for them as for video, a chat visit's chat is refused before
admission and relayed and stored after, no media signaling or TURN is handed out, a phone visit's
admission rings the patient through the telephony interface, and "Call me by phone instead" still
works from a chat visit. Raw WebSocket clients against the real server."""

from __future__ import annotations

from typing import Any

from housecall.scheduling import model
from housecall.visits import service, telephony
from housecall.workspace import inbox
from tests.clinic import Clinic, text_of
from tests.visits.conftest import Booked, connect, cookie_of, license_, license_clinician, when


async def book_mode(c: Clinic, mode: str, *, start_in: float = 5, minutes: int = 20) -> str:
    """A booked visit of the patient with Dr Carter in ``mode`` (as scheduling books it)."""
    appt = await c.create({
        "resourceType": "Appointment",
        "status": "booked",
        "appointmentType": model.mode_concept(mode),
        "start": when(start_in),
        "end": when(start_in + minutes),
        "minutesDuration": minutes,
        "participant": [
            {"actor": {"reference": f"Patient/{c.patient}"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{c.clinician}"}, "status": "accepted"},
        ],
    })  # fmt: skip
    return str(appt["id"])


async def _booked(clinic: Clinic, mode: str) -> Booked:
    await license_clinician(clinic, license_("VT"))
    return Booked(clinic, await book_mode(clinic, mode))


async def _encounter(c: Clinic, appointment: str) -> dict[str, Any]:
    found = await c.search("Encounter", [("appointment", f"Appointment/{appointment}")])
    assert len(found) == 1
    return found[0]


async def test_a_chat_visit_waits_then_chats_without_media(clinic: Clinic, live: str) -> None:
    booked = await _booked(clinic, "chat")
    c, appt = clinic, booked.appointment
    page = await c.browsers["patient"].get(f"/visits/{appt}")
    assert "Chat visit" in text_of(page.text) and "Check in" in page.text
    assert (await booked.check_in("VT", "802-555-0142")).status_code == 303
    encounter = await _encounter(c, appt)
    history = service.modality_history(encounter)
    assert [(h["mode"], h["by"]) for h in history] == [("chat", f"Patient/{c.patient}")]
    assert encounter["class"]["code"] == "VR" and encounter["status"] == "arrived"
    page = await c.browsers["patient"].get(f"/visits/{appt}")
    assert 'data-modality="chat"' in page.text and "Rather talk?" in page.text

    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
        hello = await patient.next("welcome")
        assert hello["admitted"] is False and hello["modality"] == "chat"
        place = await patient.next("waiting")
        assert place["position"] == 1 and place["minutes"] >= 4
        me = (await doctor.next("welcome"))["you"]
        # Waiting: the chat is refused on the server and reaches nobody.
        await patient.send(type="chat", text="Can you see this?")
        assert (await patient.next("error"))["code"] == "not-admitted"
        assert not [m for m in await doctor.drain() if m["type"] == "chat"]
        await doctor.send(type="admit", who=hello["you"])
        await patient.next("admitted")
        await patient.send(type="chat", text="My throat hurts since Monday")
        line = await doctor.next("chat")
        assert line["text"] == "My throat hurts since Monday" and line["fromRole"] == "patient"
        assert (await patient.next("chat"))["id"] == line["id"]  # the sender sees it stored too
        await doctor.send(type="chat", text="Any fever?")
        assert (await patient.next("chat"))["text"] == "Any fever?"
        # No media in a chat visit: no TURN credentials, no offers relayed, even once admitted.
        await patient.send(type="turn")
        assert (await patient.next("error"))["code"] == "no-media"
        await doctor.send(type="offer", to=hello["you"], data={"type": "offer", "sdp": "v=0"})
        assert (await doctor.next("error"))["code"] == "no-media"
        assert not [m for m in await patient.drain() if m["type"] in ("offer", "turn")]
        assert me

    encounter = await _encounter(c, appt)
    assert encounter["status"] == "in-progress"
    assert [h["mode"] for h in service.modality_history(encounter)] == ["chat"]  # admission adds none
    chat = await c.search("Communication", [("encounter", f"Encounter/{encounter['id']}")])
    stored = {m["payload"][0]["contentString"]: m["sender"]["reference"] for m in chat}
    assert stored == {"My throat hurts since Monday": f"Patient/{c.patient}",
                      "Any fever?": f"Practitioner/{c.clinician}"}  # fmt: skip
    assert not await c.search("Task", [("focus", f"Encounter/{encounter['id']}")])

    # "Call me by phone instead" from the chat: a callback Task, and phone in the history.
    r = await c.form_post("patient", f"/visits/{appt}/phone", {}, form_from=f"/visits/{appt}")
    assert r.status_code == 303
    encounter = await _encounter(c, appt)
    assert [h["mode"] for h in service.modality_history(encounter)] == ["chat", "phone"]
    task = (await c.search("Task", [("focus", f"Encounter/{encounter['id']}")]))[0]
    assert inbox.kind_of(task) == "callback" and "802-555-0142" in task["description"]
    page = text_of((await c.browsers["patient"].get(f"/visits/{appt}")).text)
    assert "Your clinician will call you at 802-555-0142" in page


async def test_a_phone_visit_rings_the_patient_when_let_in(clinic: Clinic, live: str) -> None:
    booked = await _booked(clinic, "phone")
    c, appt = clinic, booked.appointment
    page = text_of((await c.browsers["patient"].get(f"/visits/{appt}")).text)
    assert "Phone visit" in page and "Phone number your clinician will call you at" in page
    # The number is required.
    r = await booked.check_in("VT", "")
    assert r.status_code == 400 and "Enter a phone number we can call" in r.text
    assert (await booked.check_in("VT", "802-555-0177")).status_code == 303
    encounter = await _encounter(c, appt)
    assert [h["mode"] for h in service.modality_history(encounter)] == ["phone"]
    visit = service.Visit(await c.read("Appointment", appt), encounter)
    assert visit.modality == "phone" and visit.booked_mode == "phone" and not visit.media
    page = await c.browsers["clinician"].get(f"/visits/{appt}")
    assert "call them at 802-555-0177" in text_of(page.text) and 'data-modality="phone"' in page.text
    assert "Call ended: end the visit" in page.text

    calls: list[tuple[str, str, str | None]] = []

    class Recorder:
        """A provider that only notes whom it was asked to ring, around the local one."""

        async def call(self, rec: Any, visit: service.Visit, number: str, *, reason: str,
                       by: str | None) -> dict[str, Any]:  # fmt: skip
            calls.append((number, reason, by))
            return await telephony.CallbackTasks().call(rec, visit, number, reason=reason, by=by)

    previous = telephony.use(Recorder())
    try:
        async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
                   connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
            hello = await patient.next("welcome")
            assert hello["modality"] == "phone" and hello["admitted"] is False
            assert (await patient.next("waiting"))["position"] == 1
            await doctor.next("welcome")
            await doctor.send(type="admit", who=hello["you"])
            await patient.next("admitted")
            await patient.send(type="turn")
            assert (await patient.next("error"))["code"] == "no-media"
            page = text_of((await c.browsers["patient"].get(f"/visits/{appt}")).text)
            assert "Your clinician will call you now at 802-555-0177" in page
            # The clinician records that the call ended: the visit ends.
            await doctor.send(type="hangup")
            await patient.next("ended")
    finally:
        telephony.use(previous)
    assert calls == [("802-555-0177", telephony.PHONE_VISIT, f"Practitioner/{c.clinician}")]
    encounter = await _encounter(c, appt)
    assert encounter["status"] == "finished" and "length" in encounter
    assert [h["mode"] for h in service.modality_history(encounter)] == ["phone"]
    task = (await c.search("Task", [("focus", f"Encounter/{encounter['id']}")]))[0]
    assert inbox.kind_of(task) == "callback" and "phone visit" in task["description"]


async def test_a_video_visit_history_starts_at_check_in(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    encounter = await _encounter(c, appt)
    assert [(h["mode"], h["by"]) for h in service.modality_history(encounter)] == [
        ("video", f"Patient/{c.patient}")
    ]
    page = await c.browsers["patient"].get(f"/visits/{appt}")
    assert 'data-modality="video"' in page.text and "Video visit" in page.text
