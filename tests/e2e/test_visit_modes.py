"""Chat-only and phone-only visits in two Chromium contexts against ``housecall serve`` (decision
0025): the patient checks in and waits like everyone, the clinician lets them in, and then a chat
visit is a chat both ways and a phone visit shows the number to call, while neither page ever asks
for the camera or microphone nor builds a media connection (``getUserMedia`` and
``RTCPeerConnection`` are wrapped and counted by an init script, with fake devices that would
answer if asked)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from housecall.visits import service
from tests.e2e.visit_clinic import CHROMIUM_ARGS, encounter_of, signed_in, visit_clinic
from tests.identity.conftest import Mailbox, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer

# Counts every request for the camera or microphone and every media connection the page makes.
COUNT_MEDIA = """
window.__media = {getUserMedia: 0, peerConnections: 0};
if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = function (constraints) {
    window.__media.getUserMedia += 1;
    return original(constraints);
  };
}
const OriginalPC = window.RTCPeerConnection;
window.RTCPeerConnection = function (...args) {
  window.__media.peerConnections += 1;
  return new OriginalPC(...args);
};
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def _media_used(page: Page) -> dict[str, int]:
    return await page.evaluate("window.__media")  # type: ignore[no-any-return]


async def _check_in_and_wait(patient: Page, visit: str, phone_label: str, phone: str) -> None:
    await patient.goto(visit)
    await patient.get_by_label("Which US state are you in right now?").select_option("VT")
    await patient.get_by_label(phone_label).fill(phone)
    await patient.get_by_role("button", name="Check in").click()
    await expect(patient.get_by_role("heading", name="You are in the waiting room")).to_be_visible()
    await expect(patient.locator("#visit-place")).to_contain_text("You are next")


async def _let_in(doctor: Page, visit: str) -> None:
    await doctor.goto(visit)
    waiting = doctor.locator("#visit-lobby-list li")
    await expect(waiting).to_contain_text("Ana Reyes · VT")
    await waiting.get_by_role("button", name="Let in").click()


async def test_a_chat_only_visit(server: LiveServer, browser: Browser, database_url: str,
                                 smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    setup = await visit_clinic(database_url, smtp[1], mode="chat")
    visit = f"{server.base}/visits/{setup['appointment']}"
    patient_ctx, patient = await signed_in(browser, setup["patient"])
    doctor_ctx, doctor = await signed_in(browser, setup["clinician"])
    for context in (patient_ctx, doctor_ctx):
        await context.add_init_script(COUNT_MEDIA)
    try:
        await _check_in_and_wait(
            patient, visit, "Phone number to call if video does not work", "802-555-0100"
        )
        await expect(patient.get_by_role("heading", name="Chat visit", exact=False).first).to_be_visible()
        await expect(patient.locator("#visit-chat")).to_be_hidden()  # no chat before admission
        await _let_in(doctor, visit)
        await expect(patient.locator("#visit-status")).to_contain_text("You are in the chat visit")
        await expect(patient.locator("#visit-chat")).to_be_visible()
        await expect(patient.get_by_role("button", name="Mute")).to_be_hidden()
        await expect(patient.get_by_role("button", name="Audio only")).to_be_hidden()

        await patient.get_by_label("Message").fill("My throat hurts since Monday")
        await patient.get_by_role("button", name="Send", exact=True).click()
        await expect(doctor.locator("#visit-chat-log")).to_contain_text(
            "Ana Reyes: My throat hurts since Monday"
        )
        await doctor.get_by_label("Message").fill("Any fever?")
        await doctor.get_by_role("button", name="Send", exact=True).click()
        await expect(patient.locator("#visit-chat-log")).to_contain_text("Maya Carter: Any fever?")

        for page in (patient, doctor):
            assert await _media_used(page) == {"getUserMedia": 0, "peerConnections": 0}
            await expect(page.locator("#visit-local")).to_be_hidden()

        await doctor.get_by_role("button", name="End the visit").click()
        await expect(patient.locator("#visit-status")).to_contain_text("The visit has ended")
    finally:
        await patient_ctx.close()
        await doctor_ctx.close()
    encounter, chat = await encounter_of(database_url, smtp[1], setup)
    assert encounter["status"] == "finished"
    assert [h["mode"] for h in service.modality_history(encounter)] == ["chat"]
    assert sorted(m["payload"][0].get("contentString", "") for m in chat) == [
        "Any fever?",
        "My throat hurts since Monday",
    ]


async def test_a_phone_only_visit_shows_the_number(server: LiveServer, browser: Browser, database_url: str,
                                                   smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    setup = await visit_clinic(database_url, smtp[1], mode="phone")
    visit = f"{server.base}/visits/{setup['appointment']}"
    patient_ctx, patient = await signed_in(browser, setup["patient"])
    doctor_ctx, doctor = await signed_in(browser, setup["clinician"])
    for context in (patient_ctx, doctor_ctx):
        await context.add_init_script(COUNT_MEDIA)
    try:
        await _check_in_and_wait(
            patient, visit, "Phone number your clinician will call you at", "802-555-0177"
        )
        await _let_in(doctor, visit)
        await expect(doctor.locator("#visit-phone-call")).to_contain_text("802-555-0177")
        await expect(doctor.locator("#visit-status")).to_contain_text("Call the patient now at 802-555-0177")
        await expect(patient.locator("#visit-status")).to_contain_text(
            "Your clinician will call you now at 802-555-0177"
        )
        await patient.reload()  # the page says so on its own too, once let in
        await expect(patient.locator("#visit-phone-now")).to_contain_text("802-555-0177")
        await expect(patient.locator("#visit-chat")).to_be_hidden()
        for page in (patient, doctor):
            assert await _media_used(page) == {"getUserMedia": 0, "peerConnections": 0}
        await doctor.get_by_role("button", name="Call ended: end the visit").click()
        await expect(patient.locator("#visit-status")).to_contain_text("The visit has ended")
    finally:
        await patient_ctx.close()
        await doctor_ctx.close()
    encounter, _chat = await encounter_of(database_url, smtp[1], setup)
    assert encounter["status"] == "finished"
    assert [h["mode"] for h in service.modality_history(encounter)] == ["phone"]
