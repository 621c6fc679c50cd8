"""The waiting room is enforced on the server's signaling: raw WebSocket clients prove that a
waiting or uninvited participant's signaling, chat and TURN requests are refused, that a
clinician of the visit admits, and that the waiting patient sees a live place in line."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from housecall.visits import guests, service, signal
from tests.clinic import Clinic
from tests.visits.conftest import (
    Booked,
    book,
    close_code,
    connect,
    cookie_of,
    make_guest_link,
    open_guest_link,
    system_update,
    when,
)


async def _encounter(c: Clinic, appointment: str) -> dict[str, Any]:
    found = await c.search("Encounter", [("appointment", f"Appointment/{appointment}")])
    assert len(found) == 1
    return found[0]


async def test_nobody_reaches_the_socket_without_the_right_to(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert await close_code(live, appt) == 4401  # no session at all
    assert await close_code(live, appt, f"{guests.COOKIE}=not-a-real-guest") == 4401
    # The patient has not checked in (state, phone) yet: the socket does not open for them.
    assert await close_code(live, appt, cookie_of(c, "patient")) == 4409
    # Another patient's visit, or one that does not exist: the same answer.
    other = await book(c, patient=c.other_patient)
    assert await close_code(live, other, cookie_of(c, "patient")) == 4404
    assert await close_code(live, "no-such-visit", cookie_of(c, "clinician")) == 4404
    # Another site's page cannot ride on the clinician's cookies (cross-site WebSocket hijacking).
    assert await close_code(live, appt, cookie_of(c, "clinician"), origin="https://evil.example") == 403


async def test_a_waiting_patient_can_send_nothing_until_admitted(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    r = await booked.check_in("VT", "802-555-0100")
    assert r.status_code == 303, r.text[:300]
    encounter = await _encounter(c, appt)
    assert encounter["status"] == "arrived" and encounter["class"]["code"] == "VR"

    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
        hello = await patient.next("welcome")
        assert hello["admitted"] is False and hello["role"] == "patient"
        place = await patient.next("waiting")
        assert place["position"] == 1 and place["ahead"] == 0 and place["minutes"] >= 4  # booked in 5 minutes
        me = (await doctor.next("welcome"))["you"]
        lobby = await doctor.next("lobby")
        while not any(m["role"] == "patient" for m in lobby["members"]):
            lobby = await doctor.next("lobby")
        waiting = next(m for m in lobby["members"] if m["role"] == "patient")
        assert waiting["admitted"] is False and waiting["state"] == "VT" and waiting["name"] == "Ana Reyes"

        # Everything that reaches the clinician or the call is refused while waiting.
        for message in (
            {"type": "offer", "to": me, "data": {"type": "offer", "sdp": "v=0"}},
            {
                "type": "candidate",
                "to": me,
                "data": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"},
            },
            {"type": "chat", "text": "let me in"},
            {"type": "state", "data": {"mode": "audio"}},
            {"type": "turn"},
        ):
            await patient.send(**message)
            refusal = await patient.next("error")
            assert refusal == {"type": "error", "code": "not-admitted", "refused": message["type"]}
        # A waiting patient cannot admit themself either.
        await patient.send(type="admit", who=hello["you"])
        assert (await patient.next("error"))["code"] == "not-allowed"
        relayed = [m for m in await doctor.drain() if m["type"] in ("offer", "candidate", "chat", "state")]
        assert relayed == []
        assert await c.search("Communication", [("encounter", f"Encounter/{encounter['id']}")]) == []
        # Nor may the clinician signal to someone still waiting.
        await doctor.send(type="offer", to=hello["you"], data={"type": "offer", "sdp": "v=0"})
        assert (await doctor.next("error"))["code"] == "no-such-peer"
        assert [m for m in await patient.drain() if m["type"] == "offer"] == []

        # The clinician admits: the visit starts and the patient may now signal, chat, get TURN.
        await doctor.send(type="admit", who=hello["you"])
        admitted = await patient.next("admitted")
        assert admitted["by"] == "Maya Carter"
        peers = await patient.next("peers")
        assert [p["id"] for p in peers["peers"]] == [me]
        await patient.send(type="offer", to=me, data={"type": "offer", "sdp": "v=0 opaque"})
        offer = await doctor.next("offer")
        assert (
            offer["from"] == hello["you"]
            and offer["fromRole"] == "patient"
            and offer["fromName"] == "Ana Reyes"
        )
        assert offer["data"] == {"type": "offer", "sdp": "v=0 opaque"}  # relayed untouched
        # The sender is stamped by the server: a claimed "from" is ignored.
        await patient.send(type="candidate", to=me, data={"candidate": "x"}, **{"from": me})
        assert (await doctor.next("candidate"))["from"] == hello["you"]
        await patient.send(type="chat", text="Hello doctor")
        line = await doctor.next("chat")
        assert line["text"] == "Hello doctor" and line["from"] == hello["you"]
        assert (await patient.next("chat"))["id"] == line["id"]
        await patient.send(type="turn")
        assert (await patient.next("turn"))["iceServers"] == []  # no TURN server configured here

    encounter = await _encounter(c, appt)
    assert encounter["status"] == "in-progress"
    assert [h["status"] for h in encounter["statusHistory"]] == ["arrived", "in-progress"]
    assert service.modality_history(encounter)[0]["mode"] == "video"
    chat = await c.search("Communication", [("encounter", f"Encounter/{encounter['id']}")])
    assert [m["payload"][0]["contentString"] for m in chat] == ["Hello doctor"]
    assert chat[0]["sender"]["reference"] == f"Patient/{c.patient}"


async def test_a_guest_waits_too_and_the_clinician_hangs_up(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    token = await make_guest_link(c, appt)
    guest_cookie = await open_guest_link(c, token)
    other = await book(c)
    assert await close_code(live, other, guest_cookie) == 4401  # bound to its own visit
    async with (
        connect(live, appt, cookie_of(c, "clinician")) as doctor,
        connect(live, appt, guest_cookie) as guest,
    ):
        hello = await guest.next("welcome")
        assert hello["role"] == "guest" and hello["admitted"] is False
        doctor_id = (await doctor.next("welcome"))["you"]
        for kind in ("chat", "turn"):
            await guest.send(type=kind, text="hola")
            assert (await guest.next("error"))["code"] == "not-admitted"
        await guest.send(type="answer", to=doctor_id, data={})
        assert (await guest.next("error"))["code"] == "not-admitted"
        await doctor.send(type="admit", who=hello["you"])
        await guest.next("admitted")
        await guest.send(type="chat", text="Interpreter here")
        assert (await doctor.next("chat"))["fromName"] == "Interpreter"
        await doctor.send(type="hangup")
        assert (await guest.next("ended"))["by"] == "Maya Carter"
    encounter = await _encounter(c, appt)
    assert encounter["status"] == "finished"
    assert encounter["period"]["end"] and encounter["length"]["unit"] == "min"
    assert any(p["type"][0].get("text") == "Guest: Interpreter" for p in encounter["participant"])
    assert all("end" in p["period"] for p in encounter["participant"])
    # A finished visit does not open again, for anyone.
    assert await close_code(live, appt, cookie_of(c, "patient")) == 4410
    assert await close_code(live, appt, guest_cookie) == 4410


async def test_the_place_in_line_comes_from_the_clinicians_real_queue(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    # Another patient of Dr Carter, booked earlier today, checked in and waiting (25 minutes booked).
    earlier = await book(c, patient=c.other_patient, start_in=-10, minutes=25)
    other = await c.create({
        "resourceType": "Encounter", "status": "arrived",
        "class": {"system": service.ACT_CODE, "code": "VR"},
        "statusHistory": [{"status": "arrived", "period": {"start": when(-12)}}],
        "subject": {"reference": f"Patient/{c.other_patient}"},
        "appointment": [{"reference": f"Appointment/{earlier}"}],
        "participant": [{"individual": {"reference": f"Practitioner/{c.clinician}"}}],
    })  # fmt: skip
    assert (await booked.check_in()).status_code == 303
    async with connect(live, appt, cookie_of(c, "patient")) as patient:
        place = await patient.next("waiting")
        assert place["position"] == 2 and place["ahead"] == 1 and place["minutes"] == 25
        # The other patient is admitted (their visit is now in progress, 25 minutes from now).
        other["status"] = "in-progress"
        other["period"] = {"start": when(0)}
        await system_update(c, other)
        signal.HUB.queue_changed(c.env.org_id, [f"Practitioner/{c.clinician}"])
        place = await patient.next("waiting")
        assert place["position"] == 1 and place["ahead"] == 0 and 24 <= place["minutes"] <= 25


async def test_staff_message_a_waiting_patient(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    room = await c.browsers["nurse"].get("/workspace/visits")
    assert room.status_code == 200 and "Ana Reyes" in room.text and "Vermont" in room.text
    async with connect(live, appt, cookie_of(c, "patient")) as patient:
        await patient.next("waiting")
        r = await c.form_post("nurse", f"/visits/{appt}/notice", {"text": "Running 10 minutes late"},
                              form_from="/workspace/visits")  # fmt: skip
        assert r.status_code == 303
        note = await patient.next("notice")
        assert note["text"] == "Running 10 minutes late" and note["fromName"] == "Noor Nolan"
    stored = await c.search("Communication", [("subject", f"Patient/{c.patient}")])
    assert [s["payload"][0]["contentString"] for s in stored] == ["Running 10 minutes late"]
    assert stored[0]["sender"]["reference"] == f"Practitioner/{c.nurse}"
    # A patient cannot write to the waiting room of anyone.
    r = await c.form_post("patient", f"/visits/{appt}/notice", {"text": "x"}, form_from="/portal")
    assert r.status_code == 403


async def test_a_second_socket_of_the_admitted_patient_rejoins(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor:
        await doctor.next("welcome")
        async with connect(live, appt, cookie_of(c, "patient")) as patient:
            who = (await patient.next("welcome"))["you"]
            await doctor.send(type="admit", who=who)
            await patient.next("admitted")
        await asyncio.sleep(0.1)
        # The connection dropped; the visit is in progress, so the patient comes straight back in.
        async with connect(live, appt, cookie_of(c, "patient")) as again:
            assert (await again.next("welcome"))["admitted"] is True


async def test_bad_messages_are_answered_not_fatal(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor:
        await doctor.next("welcome")
        await doctor.ws.send("{not json")
        assert (await doctor.next("error"))["code"] == "bad-json"
        await doctor.ws.send("[1, 2]")
        assert (await doctor.next("error"))["code"] == "bad-message"
        await doctor.send(type="teleport")
        assert (await doctor.next("error"))["code"] == "unknown-type"
        await doctor.ws.send('{"type": "chat", "text": "' + "x" * 70_000 + '"}')
        assert (await doctor.next("error"))["code"] == "too-large"
        # Nobody checked in yet: the visit has no record to chat into; the call stays up.
        await doctor.send(type="chat", text="anyone?")
        assert (await doctor.next("error"))["refused"] == "chat"
        for n in range(signal.CHAT_PER_MINUTE + 1):
            await doctor.send(type="chat", text=f"line {n}")
        codes = [m["code"] for m in await doctor.drain(1.0) if m["type"] == "error"]
        assert codes[-1] == "too-fast"
        await doctor.send(type="turn")
        assert (await doctor.next("turn"))["type"] == "turn"  # still connected


async def test_other_care_team_members_see_the_waiting_room_but_never_join(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    async with connect(live, appt, cookie_of(c, "nurse")) as nurse, \
               connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
        hello = await nurse.next("welcome")
        assert hello["role"] == "staff" and hello["admitted"] is False
        who = (await patient.next("welcome"))["you"]
        lobby = await nurse.next("lobby")
        while not lobby["members"]:
            lobby = await nurse.next("lobby")
        assert [m["role"] for m in lobby["members"]] == ["patient"]  # staff are not shown as callers
        await nurse.send(type="admit", who=who)
        assert (await nurse.next("error"))["code"] == "not-allowed"
        for kind in ("turn", "chat"):
            await nurse.send(type=kind, text="x")
            assert (await nurse.next("error"))["code"] == "not-admitted"
        await nurse.send(type="notice", who=who, text="Dr Carter is finishing another visit")
        assert (await patient.next("notice"))["text"] == "Dr Carter is finishing another visit"
        assert [m for m in await patient.drain() if m["type"] == "admitted"] == []


async def test_a_proxy_checks_in_and_joins_for_the_patient(booked: Booked, live: str) -> None:
    from housecall.identity import service as identity

    c, appt = booked.clinic, booked.appointment
    env = c.env
    proxy = await env.account("proxy")
    async with env.db.transaction() as conn:
        grant = await identity.grant_proxy(conn, proxy.id, c.patient, granted_by="system:test", relationship="parent",
                                           settings=env.settings)  # fmt: skip
    browser = env.client()
    await env.signin(browser, proxy.email, next="/portal")
    c.browsers["proxy"] = browser
    r = await c.form_post("proxy", "/account/acting-for", {"patient": c.patient, "next": "/portal"},
                          form_from="/portal/choose")  # fmt: skip
    assert r.status_code == 303
    r = await c.form_post("proxy", f"/visits/{appt}/checkin", {"state": "VT", "phone": "802-555-0177"},
                          form_from=f"/visits/{appt}")  # fmt: skip
    assert r.status_code == 303
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "proxy")) as parent:  # fmt: skip
        hello = await parent.next("welcome")
        assert hello["role"] == "patient" and hello["admitted"] is False
        await doctor.next("welcome")
        await doctor.send(type="admit", who=hello["you"])
        await parent.next("admitted")
        await parent.send(type="chat", text="I am here with my daughter")
        await doctor.next("chat")
    encounter = (await c.search("Encounter", [("appointment", f"Appointment/{appt}")]))[0]
    related = f"RelatedPerson/{grant.related_person_id}"
    assert any((p.get("individual") or {}).get("reference") == related for p in encounter["participant"])
    chat = await c.search("Communication", [("encounter", f"Encounter/{encounter['id']}")])
    assert chat[0]["sender"]["reference"] == related


async def test_everyone_waiting_for_a_clinician_shares_one_read_of_her_line(
    booked: Booked, live: str, monkeypatch: Any
) -> None:
    """A change in the clinician's line reaches every waiting socket with its new place, from one
    read of the line for all of them (one search per waiting socket held a process to about a
    thousand waiting patients: bench/signaling_bench.py)."""
    c, appt = booked.clinic, booked.appointment
    reads: list[str] = []
    real = service.clinicians_line

    async def counted(rec: Any, practitioner: str) -> list[service.Queued]:
        reads.append(practitioner)
        return await real(rec, practitioner)

    monkeypatch.setattr(service, "clinicians_line", counted)
    assert (await booked.check_in()).status_code == 303
    async with contextlib.AsyncExitStack() as stack:
        tabs = [
            await stack.enter_async_context(connect(live, appt, cookie_of(c, "patient"))) for _ in range(3)
        ]
        for tab in tabs:
            place = await tab.next("waiting")
            assert place["position"] == 1 and place["ahead"] == 0
        assert reads == [f"Practitioner/{c.clinician}"]
        # Another patient of Dr Carter, booked ten minutes earlier, checks in on the page: she goes
        # first, and every tab says so at once.
        other = await c.env.account("patient", patient_id=c.other_patient)
        browser = c.env.client()
        assert (await c.env.signin(browser, other.email, next="/portal")).status_code == 303
        c.browsers["other"] = browser
        earlier = await book(c, patient=c.other_patient, start_in=-10, minutes=25)
        r = await c.form_post("other", f"/visits/{earlier}/checkin", {"state": "VT", "phone": "802-555-0111"},
                              form_from=f"/visits/{earlier}")  # fmt: skip
        assert r.status_code == 303, r.text[:300]
        for tab in tabs:
            place = await tab.next("waiting")
            assert place["position"] == 2 and place["ahead"] == 1 and place["minutes"] >= 25
        assert len(reads) == 2
    # The sockets closed: the hub forgets the line (a later visit reads it afresh).
    await asyncio.sleep(0.1)
    assert not any(org == c.env.org_id for org, _ in signal.HUB.lines)


async def test_a_shared_line_is_read_again_when_it_changes_during_a_read() -> None:
    """A change that lands while the line is being read is not lost: the next place reads again."""
    line = signal.Line()
    reads = 0

    async def read() -> list[service.Queued]:
        nonlocal reads
        reads += 1
        if reads == 1:
            line.version += 1  # someone checked in while this read was in flight
        return []

    await line.current(read)
    await line.current(read)
    await line.current(read)
    assert reads == 2


def test_a_change_wakes_the_rooms_of_that_clinician_only() -> None:
    """The hub finds the rooms naming a clinician without looking at every room, and forgets a
    clinician's line when her last room closes."""
    hub = signal.Hub()

    def visit(appointment: str, *practitioners: str) -> service.Visit:
        participants = [{"actor": {"reference": "Patient/p"}}] + [
            {"actor": {"reference": p}} for p in practitioners
        ]
        return service.Visit({"id": appointment, "participant": participants})

    def waiting_in(room: signal.Room) -> signal.Member:
        member = signal.Member(ws=None, role="patient", name="", ref=None, actor=None)  # type: ignore[arg-type]
        room.members[member.id] = member
        return member

    carter = hub.room("org", visit("a1", "Practitioner/carter"))
    shared = hub.room("org", visit("a2", "Practitioner/nolan", "Practitioner/carter"))
    nolan = hub.room("org", visit("a3", "Practitioner/nolan"))
    elsewhere = hub.room("other-org", visit("a4", "Practitioner/carter"))
    members = {room.appointment_id: waiting_in(room) for room in (carter, shared, nolan, elsewhere)}
    hub.queue_changed("org", ["Practitioner/carter"])
    assert {a for a, m in members.items() if m.wake.is_set()} == {"a1", "a2"}
    assert hub.lines[("org", "Practitioner/carter")].version == 1
    assert hub.lines[("org", "Practitioner/nolan")].version == 0
    for room in (carter, shared):
        hub.leave(room, members[room.appointment_id])
    assert ("org", "Practitioner/carter") not in hub.lines and ("org", "Practitioner/nolan") in hub.lines
