"""In the call. Files shared in the call: only a member admitted to it may send or open one; the file is checked
by its content, stored as a chat entry of the visit (a ``visit-chat`` Communication with the
attachment, the bytes in a Binary of the patient's record) and announced over the room's WebSocket
to the admitted members only, with a link that serves it as a download. The page's own
step-down to audio only is recorded as automatic; a dropped patient's socket comes back into the
call and the others learn the new id (the page sets the calls up again)."""

from __future__ import annotations

from typing import Any

import httpx

from housecall.visits import service
from tests.clinic import Clinic
from tests.identity.conftest import CSRF
from tests.visits.conftest import Booked, connect, cookie_of

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def share(c: Clinic, who: str, appointment: str, file: tuple[str, bytes, str], *,
                csrf: bool = True) -> httpx.Response:  # fmt: skip
    """Send a file the way the page's script does (multipart, the form's CSRF token, JSON back)."""
    browser = c.browsers[who]
    page = await browser.get(f"/visits/{appointment}")
    match = CSRF.search(page.text)
    assert match, (page.status_code, page.text[:300])
    data = {"csrf": match.group(1)} if csrf else {}
    return await browser.post(f"/visits/{appointment}/files", data=data, files={"file": file},
                              headers={"Accept": "application/json"})  # fmt: skip


async def _chat_entries(c: Clinic, appointment: str) -> list[dict[str, Any]]:
    encounter = (await c.search("Encounter", [("appointment", f"Appointment/{appointment}")]))[0]
    return await c.search("Communication", [("encounter", f"Encounter/{encounter['id']}"), ("_sort", "sent")])


async def test_only_members_in_the_call_share_and_open_files(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303

    # The clinician is in the call from the start; the patient is still waiting.
    sent = await share(c, "clinician", appt, ("Exercises.pdf", PDF, "application/pdf"))
    assert sent.status_code == 200, sent.text[:300]
    first = sent.json()
    assert first["file"]["name"] == "Exercises.pdf" and first["file"]["contentType"] == "application/pdf"
    url = first["file"]["url"]
    assert url == f"/visits/{appt}/files/{first['id']}"

    # A waiting patient can neither send nor open a file of the call.
    refused = await share(c, "patient", appt, ("rash.png", PNG, "image/png"))
    assert refused.status_code == 403 and "once you are in the call" in refused.json()["error"]
    assert (await c.browsers["patient"].get(url)).status_code == 403
    # Care-team staff see the waiting room, never the call's files; nor may they send one.
    assert (await c.browsers["nurse"].get(url)).status_code == 404
    assert (await share(c, "nurse", appt, ("x.png", PNG, "image/png"))).status_code == 403
    # Without the form's token nothing is stored.
    assert (await share(c, "clinician", appt, ("x.png", PNG, "image/png"), csrf=False)).status_code == 403
    assert len(await _chat_entries(c, appt)) == 1

    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "patient")) as patient, \
               connect(live, appt, cookie_of(c, "nurse")) as nurse:  # fmt: skip
        await doctor.next("welcome")
        waiting = await patient.next("welcome")
        await nurse.next("welcome")
        await doctor.send(type="admit", who=waiting["you"])
        await patient.next("admitted")
        await patient.drain()
        await doctor.drain()
        await nurse.drain()

        # Admitted, the patient shares a photo; a file named .png that is not one is refused.
        fake = await share(c, "patient", appt, ("rash.png", b"<html>not a picture</html>", "image/png"))
        assert fake.status_code == 400 and "PNG or JPEG" in fake.json()["error"]
        big = await share(c, "patient", appt, ("big.png", PNG + bytes(5 * 1024 * 1024), "image/png"))
        assert big.status_code == 400 and "smaller than 5 MB" in big.json()["error"]
        sent = await share(c, "patient", appt, ("../../my rash.PNG", PNG, "application/octet-stream"))
        assert sent.status_code == 200, sent.text[:300]
        photo = sent.json()

        # Everyone in the call hears of it as a chat entry with a download link; staff do not.
        for sock in (doctor, patient):
            told = await sock.next("chat")
            assert told["fromName"] == "Ana Reyes" and told["fromRole"] == "patient"
            assert told["from"] == waiting["you"] and told["id"] == photo["id"]
            assert told["file"] == {"name": "my rash.png", "contentType": "image/png", "size": len(PNG),
                                    "url": f"/visits/{appt}/files/{photo['id']}"}  # fmt: skip
        assert [m for m in await nurse.drain() if m["type"] == "chat"] == []

        # Now in the call, the patient opens the clinician's file: a download of the proven type.
        got = await c.browsers["patient"].get(url)
        assert got.status_code == 200 and got.content == PDF
        assert got.headers["content-type"] == "application/pdf"
        assert got.headers["content-disposition"].startswith('attachment; filename="Exercises.pdf"')
        assert got.headers["x-content-type-options"] == "nosniff"
        got = await c.browsers["clinician"].get(photo["file"]["url"])
        assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"

    # Stored as the visit's chat entries, as their senders, the bytes in the patient's record.
    entries = await _chat_entries(c, appt)
    assert [e["sender"]["reference"] for e in entries] == [
        f"Practitioner/{c.clinician}",
        f"Patient/{c.patient}",
    ]
    for e in entries:
        assert e["category"][0]["coding"][0]["code"] == "visit-chat"
        attachment = e["payload"][0]["contentAttachment"]
        binary = await c.read("Binary", attachment["url"].removeprefix("Binary/"))
        assert binary["securityContext"]["reference"] == f"Patient/{c.patient}"
    # The visit page lists them in the chat with their links.
    page = await c.browsers["patient"].get(f"/visits/{appt}")
    assert f'href="/visits/{appt}/files/{photo["id"]}"' in page.text
    # A file of another visit, or a text line, is not served under this visit.
    assert (await c.browsers["clinician"].get(f"/visits/{appt}/files/no-such-entry")).status_code == 404


async def test_the_pages_step_down_is_recorded_as_automatic(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor:
        doctor_id = (await doctor.next("welcome"))["you"]
        async with connect(live, appt, cookie_of(c, "patient")) as patient:
            first = (await patient.next("welcome"))["you"]
            await doctor.send(type="admit", who=first)
            await patient.next("admitted")
            # Only a real ``true`` counts, and only for a step down to audio.
            await patient.send(
                type="state", data={"audio": True, "video": False, "mode": "audio", "auto": True}
            )
            told = await doctor.next("state")
            assert told["data"] == {"audio": True, "video": False, "mode": "audio", "auto": True}
            await patient.send(
                type="state", data={"audio": True, "video": True, "mode": "video", "auto": True}
            )
            assert (await doctor.next("state"))["data"] == {"audio": True, "video": True, "mode": "video"}
            await patient.send(
                type="state", data={"audio": True, "video": False, "mode": "audio", "auto": "yes"}
            )
            assert "auto" not in (await doctor.next("state"))["data"]
        # The patient's connection drops: the clinician is told, then meets the new socket.
        assert (await doctor.next("left"))["peer"] == first
        async with connect(live, appt, cookie_of(c, "patient")) as again:
            hello = await again.next("welcome")
            assert hello["admitted"] is True and hello["status"] == "in-progress"
            peers = await doctor.next("peers")
            assert [p["id"] for p in peers["peers"]] == [hello["you"]] and peers["you"] == doctor_id
    encounter = (await c.search("Encounter", [("appointment", f"Appointment/{appt}")]))[0]
    assert encounter["status"] == "in-progress"
    history = [(h["mode"], h.get("by"), h.get("how")) for h in service.modality_history(encounter)]
    me = f"Patient/{c.patient}"
    assert history == [("video", me, None), ("audio", me, "auto"),
                       ("video", me, None), ("audio", me, None)]  # fmt: skip
