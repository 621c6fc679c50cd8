"""Links into a visit in Chromium (fake camera and microphone) against ``housecall serve`` with a
local coturn: the patient opens a join link with nobody signed in, checks in and waits; the
clinician invites an interpreter from the visit page; the interpreter opens the guest link in a
browser with no account, gives a name and waits; the clinician lets both in and all three
exchange media (decoded video frames and audio packets from getStats)."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Browser, expect

from housecall.core.db import open_database
from housecall.visits import join
from tests.e2e.test_visit_story import _until, browser, server_env  # noqa: F401 - fixtures
from tests.e2e.visit_clinic import signed_in, visit_clinic
from tests.identity.conftest import Mailbox, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer
from tests.visits.conftest import coturn  # noqa: F401 - coturn is a fixture


async def _join_link(database_url: str, org: str, appointment: str) -> str:
    """A join link for the patient's account, as the job that mails it makes one."""
    db = open_database(database_url)
    await db.connect()
    try:
        async with db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT id, patient_id FROM account WHERE org_id = $1 AND kind = 'patient'", org
            )
            assert row is not None
            raw = await join.make(
                conn, org_id=org, appointment_id=appointment, patient_id=row[1], account_id=row[0]
            )
    finally:
        await db.close()
    return f"/join/{raw}"


async def test_a_patient_by_join_link_and_a_guest_by_guest_link_meet_the_clinician(
    server: LiveServer,
    browser: Browser,  # noqa: F811
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    setup = await visit_clinic(database_url, smtp[1])
    appointment = setup["appointment"]
    link = await _join_link(database_url, setup["org"], appointment)
    media: dict[str, Any] = {
        "permissions": ["camera", "microphone"],
        "viewport": {"width": 375, "height": 740},
    }
    patient_ctx = await browser.new_context(**media)
    guest_ctx = await browser.new_context(**media)
    doctor_ctx, doctor = await signed_in(browser, setup["clinician"])
    try:
        # The patient, signed in nowhere, follows the link and lands on the visit's check-in.
        patient = await patient_ctx.new_page()
        await patient.goto(server.base + link)
        assert patient.url.endswith(f"/visits/{appointment}")
        await patient.get_by_label("Which US state are you in right now?").select_option("VT")
        await patient.get_by_label("Phone number to call if video does not work").fill("802-555-0100")
        await patient.get_by_role("button", name="Check in").click()
        await expect(patient.get_by_role("heading", name="You are in the waiting room")).to_be_visible()

        # The clinician invites an interpreter from the visit page.
        await doctor.goto(f"{server.base}/visits/{appointment}")
        await doctor.get_by_label("Who is the guest?").select_option("interpreter")
        await doctor.get_by_role("button", name="Make a guest link").click()
        shown = await doctor.locator("#guest-link").inner_text()
        guest_path = re.sub(r"^https?://[^/]+", "", shown)
        assert guest_path.startswith("/guest/")

        # The interpreter opens it with no account, gives a name, and waits.
        guest = await guest_ctx.new_page()
        await guest.goto(server.base + guest_path)
        await guest.get_by_label("Your name").fill("Rosa Díaz")
        await guest.get_by_role("button", name="Continue").click()
        await expect(guest.get_by_role("heading", name="You are in the waiting room")).to_be_visible()
        await expect(guest.locator("#visit-controls")).to_be_hidden()

        # The same link in another browser is refused.
        other_ctx = await browser.new_context()
        other = await other_ctx.new_page()
        answer = await other.goto(server.base + guest_path)
        assert answer is not None and answer.status == 410
        await other_ctx.close()

        # The clinician lets both in from the lobby.
        await doctor.goto(f"{server.base}/visits/{appointment}")
        lobby = doctor.locator("#visit-lobby-list li")
        await expect(lobby.filter(has_text="Rosa Díaz (Interpreter)")).to_have_count(1)
        await lobby.filter(has_text="Ana Reyes").get_by_role("button", name="Let in").click()
        await lobby.filter(has_text="Rosa Díaz (Interpreter)").get_by_role("button", name="Let in").click()
        await expect(guest.locator("#visit-status")).to_contain_text("You are in the visit")

        def flowing(peers: int) -> Any:
            return lambda rows: (
                len(rows) == peers and all(r["framesDecoded"] > 0 and r["audioPackets"] > 0 for r in rows)
            )

        await _until(guest, flowing(2), "the guest receives video and audio from both")
        await _until(doctor, flowing(2), "the clinician receives video and audio from both")
        await _until(patient, flowing(2), "the patient receives video and audio from both")

        await guest.get_by_label("Message").fill("Hola, soy la intérprete")
        await guest.get_by_role("button", name="Send").click()
        await expect(doctor.locator("#visit-chat-log")).to_contain_text("Rosa Díaz (Interpreter): Hola")
    finally:
        await patient_ctx.close()
        await guest_ctx.close()
        await doctor_ctx.close()
