"""A whole video visit in two Chromium contexts (patient and clinician, fake camera and microphone)
against ``housecall serve`` on 127.0.0.1 with a local coturn: the technology check, check-in, the
waiting room, admit, media both ways (decoded video frames and audio packets on both sides, read
from getStats), chat, a file shared, the patient's switch to audio only (no new video frames, audio
still flowing), hang-up, the note and the after-visit summary, which the patient reads in the portal."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.visits import service
from tests.e2e.visit_clinic import CHROMIUM_ARGS, encounter_of, signed_in, visit_clinic
from tests.identity.conftest import Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer
from tests.visits.conftest import Turn, coturn  # noqa: F401 - coturn is a fixture

PHOTO = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)


@pytest.fixture
def server_env(coturn: Turn) -> dict[str, str]:  # noqa: F811
    return {"HOUSECALL_TURN_URLS": json.dumps(coturn.urls), "HOUSECALL_TURN_SECRET": coturn.secret}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def _inbound(page: Page) -> list[dict[str, Any]]:
    return await page.evaluate("window.housecallVisit.inbound()")  # type: ignore[no-any-return]


async def _until(page: Page, test: Any, what: str, within: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = await _inbound(page)
        if rows and test(rows):
            return rows
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what}: {rows}")


async def test_a_whole_video_visit(server: LiveServer, browser: Browser, database_url: str,
                                   smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    setup = await visit_clinic(database_url, smtp[1])
    visit = f"{server.base}/visits/{setup['appointment']}"
    patient_ctx, patient = await signed_in(browser, setup["patient"])
    doctor_ctx, doctor = await signed_in(browser, setup["clinician"])
    try:
        # Before the visit, the patient's technology check passes.
        await patient.goto(server.base + "/visits/check")
        await patient.get_by_role("button", name="Start the check").click()
        await expect(patient.locator("#check-verdict")).to_have_text("Video should work.", timeout=30_000)

        # Check-in: where the patient is now, and a number for the fallback.
        await patient.goto(visit)
        await patient.get_by_label("Which US state are you in right now?").select_option("VT")
        await patient.get_by_label("Phone number to call if video does not work").fill("802-555-0100")
        await patient.get_by_role("button", name="Check in").click()
        await expect(patient.get_by_role("heading", name="You are in the waiting room")).to_be_visible()
        await expect(patient.locator("#visit-place")).to_contain_text("You are next")
        # Nothing of the call shows while waiting: no camera, no call controls.
        await expect(patient.locator("#visit-controls")).to_be_hidden()
        await expect(patient.locator("#visit-local")).to_be_hidden()
        assert await patient.locator("script:not([src])").count() == 0
        assert await patient.locator("[style]").count() == 0

        # The clinician sees who waits and lets her in.
        await doctor.goto(visit)
        waiting = doctor.locator("#visit-lobby-list li")
        await expect(waiting).to_contain_text("Ana Reyes · VT")
        await waiting.get_by_role("button", name="Let in").click()
        await expect(patient.locator("#visit-status")).to_contain_text("You are in the visit")
        await expect(patient.get_by_role("button", name="Hang up")).to_be_visible()

        # Media both ways.
        def flowing(rows: list[dict[str, Any]]) -> bool:
            return all(r["framesDecoded"] > 0 and r["audioPackets"] > 0 for r in rows)

        await _until(patient, flowing, "patient receives video and audio")
        await _until(doctor, flowing, "clinician receives video and audio")

        # Chat, stored with the visit.
        await patient.get_by_label("Message").fill("Can you see my rash?")
        await patient.get_by_role("button", name="Send").click()
        await expect(doctor.locator("#visit-chat-log")).to_contain_text("Ana Reyes: Can you see my rash?")

        # A photo shared in the call: announced in the chat with a link, downloaded by the clinician.
        await patient.get_by_label("Share a file (photo or PDF, up to 5 MB)").set_input_files(
            {"name": "rash.png", "mimeType": "image/png", "buffer": PHOTO}
        )
        await patient.get_by_role("button", name="Share", exact=True).click()
        link = doctor.locator("#visit-chat-log").get_by_role("link", name="rash.png")
        await expect(link).to_be_visible()
        await expect(patient.locator("#visit-chat-log").get_by_role("link", name="rash.png")).to_be_visible()
        async with doctor.expect_download() as download:
            await link.click()
        saved = await (await download.value).path()
        assert saved is not None and saved.read_bytes() == PHOTO
        # A file that is not a photo or PDF is refused beside the field, and the call goes on.
        await patient.get_by_label("Share a file (photo or PDF, up to 5 MB)").set_input_files(
            {"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text"}
        )
        await patient.get_by_role("button", name="Share", exact=True).click()
        await expect(patient.locator("#visit-file-error")).to_contain_text("PNG or JPEG")

        # The patient switches to audio only: no new video frames reach the clinician, audio goes on.
        await patient.get_by_role("button", name="Audio only").click()
        await expect(doctor.locator("#visit-status")).to_contain_text("switched to audio only")
        await asyncio.sleep(1.0)  # frames already in flight are decoded; then the video stops
        before = (await _inbound(doctor))[0]
        await asyncio.sleep(2.0)
        after = (await _inbound(doctor))[0]
        assert after["framesDecoded"] - before["framesDecoded"] <= 1, (before, after)
        assert after["audioPackets"] > before["audioPackets"] + 20, (before, after)
        tracks = await patient.evaluate(
            "document.getElementById('visit-local').srcObject.getVideoTracks().length"
        )
        assert tracks == 0  # the camera was released

        # Hang up: the visit ends for both.
        await doctor.get_by_role("button", name="Hang up").click()
        await expect(patient.locator("#visit-status")).to_contain_text("The visit has ended")

        # The clinician writes the note and the after-visit summary; the patient reads it in the portal.
        await doctor.goto(visit)
        await doctor.get_by_role("link", name="Write the visit note").click()
        await doctor.get_by_label("Assessment").fill("Contact dermatitis of the forearm.")
        await doctor.get_by_label("Plan").fill("Hydrocortisone cream 1% twice a day for a week.")
        await doctor.get_by_role("button", name="Sign the note").click()
        await expect(doctor.get_by_role("status").first).to_contain_text("The note was signed.")
        await doctor.get_by_role("link", name="After-visit summary").click()
        await doctor.get_by_label("Dermatitis, unspecified (L30.9)").check()
        await doctor.get_by_label("Instructions for the patient").fill(
            "Use the cream twice a day; avoid the new soap."
        )
        await doctor.get_by_role("button", name="Sign and send to the patient").click()
        await expect(doctor.get_by_role("status").first).to_contain_text("The summary was signed")
        await patient.goto(f"{server.base}/portal/documents")
        await patient.get_by_role("link", name="After-visit summary").first.click()
        await expect(patient.locator("main")).to_contain_text("avoid the new soap")
    finally:
        await patient_ctx.close()
        await doctor_ctx.close()

    encounter, chat = await encounter_of(database_url, smtp[1], setup)
    assert encounter["status"] == "finished" and encounter["length"]["value"] >= 0
    assert [h["mode"] for h in service.modality_history(encounter)] == ["video", "audio"]
    payloads = [m["payload"][0] for m in chat]
    assert sorted(p.get("contentString") or p["contentAttachment"]["title"] for p in payloads) == [
        "Can you see my rash?",
        "rash.png",
    ]


async def test_the_technology_check_calls_the_echo_peer(server: LiveServer, browser: Browser, database_url: str,
                                                         smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    setup = await visit_clinic(database_url, smtp[1])
    context, page = await signed_in(browser, setup["patient"])
    try:
        await page.goto(server.base + "/visits/check")
        await page.get_by_role("button", name="Start the check").click()
        verdict = page.locator("#check-verdict")
        await expect(verdict).to_be_visible(timeout=30_000)
        await expect(verdict).to_have_text("Video should work.")
        assert (await page.locator("#check-rtt").inner_text()).endswith(" ms")
        assert await page.locator("#check-candidate").inner_text() in ("host", "srflx", "prflx", "relay")
    finally:
        await context.close()
    db = open_database(database_url)
    await db.connect()
    try:
        async with db.reader() as conn:
            ctx = ix.Ctx(conn, settings_for_tests(database_url, smtp[1]), "https://testserver/fhir",
                         Access.system(setup["org"]))  # fmt: skip
            query = [("code", f"{service.VISIT_SYSTEM}|{service.TECH_CHECK_CODE}")]
            found = await ix.search(ctx, ix.search_request(ctx, "Observation", query))
    finally:
        await db.close()
    assert [m.resource()["valueCodeableConcept"]["coding"][0]["code"] for m in found.matches] == ["video"]
