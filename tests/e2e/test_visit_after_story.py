"""After a video visit, in Chromium against ``housecall serve`` on 127.0.0.1: the clinician writes
the note from the visit's template and signs the after-visit summary (a diagnosis, instructions, a
prescription, a follow-up); the patient finds the summary in the portal, downloads its PDF, sees
the follow-up to book and rates the visit, reporting a technical problem. The visit itself (check-in,
admission, hang-up) is made through the service layer: tests/e2e/test_visit_story.py runs a real one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.visits import after
from housecall.workspace import inbox
from tests.e2e.visit_clinic import signed_in, visit_clinic
from tests.identity.conftest import Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer


async def _stored(database_url: str, smtp_port: int, org: str, res_type: str,
                  query: list[tuple[str, str]]) -> list[dict[str, Any]]:  # fmt: skip
    db = open_database(database_url)
    await db.connect()
    try:
        async with db.reader() as conn:
            ctx = ix.Ctx(conn, settings_for_tests(database_url, smtp_port), "https://testserver/fhir",
                         Access.system(org))  # fmt: skip
            found = await ix.search(ctx, ix.search_request(ctx, res_type, query))
    finally:
        await db.close()
    return [m.resource() for m in found.matches]


async def test_note_summary_portal_pdf_and_rating(server: LiveServer, browser: Browser, database_url: str,
                                                  smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    setup = await visit_clinic(database_url, smtp[1], ended=True)
    appt = setup["appointment"]
    doctor_ctx, doctor = await signed_in(
        browser, setup["clinician"], viewport={"width": 1024, "height": 800}, accept_downloads=True
    )
    patient_ctx, patient = await signed_in(
        browser, setup["patient"], viewport={"width": 1024, "height": 800}, accept_downloads=True
    )
    try:
        # The clinician finds the ended visit in the list of visits to write up, and writes the note.
        await doctor.goto(f"{server.base}/workspace/visits")
        await doctor.get_by_role("link", name="Visits to write up").click()
        await expect(doctor.get_by_role("row", name="Ana Reyes")).to_contain_text("Not written")
        await doctor.goto(f"{server.base}/visits/{appt}")
        await doctor.get_by_role("link", name="Write the visit note").click()
        await expect(doctor.get_by_role("heading", name="Visit note")).to_be_visible()
        await doctor.get_by_label("Subjective").fill("Sore throat for three days, no fever.")
        await doctor.get_by_role("button", name="Sign the note").click()
        # Signing needs an assessment: said beside the field, the text typed is kept.
        await expect(doctor.locator("#assessment-error")).to_contain_text("before signing")
        await expect(doctor.get_by_label("Subjective")).to_have_value("Sore throat for three days, no fever.")
        await doctor.get_by_label("Objective").fill("Red pharynx on camera.")
        await doctor.get_by_label("Assessment").fill("Viral pharyngitis.")
        await doctor.get_by_label("Plan").fill("Fluids, rest, ibuprofen.")
        await doctor.get_by_role("button", name="Sign the note").click()
        await expect(doctor.get_by_role("status").first).to_contain_text("The note was signed.")

        # The after-visit summary.
        await doctor.get_by_role("link", name="After-visit summary").click()
        await doctor.get_by_label("Acute pharyngitis, unspecified (J02.9)").check()
        await doctor.get_by_label("Instructions for the patient").fill("Drink plenty of fluids and rest.")
        await doctor.get_by_label("Prescriptions").fill(
            "Ibuprofen 400 mg - one tablet every 8 hours with food"
        )
        await doctor.get_by_label("Follow-up", exact=True).select_option("2")
        await doctor.get_by_role("button", name="Sign and send to the patient").click()
        await expect(doctor.get_by_role("status").first).to_contain_text("The summary was signed")

        # The patient: the summary in the portal's documents, as PDF; the follow-up to book; the rating.
        await patient.goto(f"{server.base}/portal/documents")
        await patient.get_by_role("link", name="After-visit summary").first.click()
        await expect(patient.locator(".document-text")).to_contain_text("Drink plenty of fluids and rest.")
        async with patient.expect_download() as waiting:
            await patient.get_by_role("link", name="Download as PDF").click()
        download = await waiting.value
        pdf = await asyncio.to_thread(Path(await download.path()).read_bytes)
        assert pdf.startswith(b"%PDF") and b"Ibuprofen 400 mg" in pdf

        await patient.goto(f"{server.base}/visits/{appt}")
        await patient.get_by_role("link", name="Your after-visit summary and rating").click()
        await expect(patient.locator("#summary-text")).to_contain_text("Acute pharyngitis")
        await expect(patient.get_by_role("link", name="Book the follow-up visit")).to_be_visible()
        await patient.get_by_role("button", name="Send").click()
        await expect(patient.locator("#rating-error")).to_contain_text("Choose a rating")
        await patient.get_by_label("4", exact=True).check()
        await patient.get_by_label("No sound").check()
        await patient.get_by_label("Anything you want to tell us (optional)").fill("Sound cut out twice.")
        await patient.get_by_role("button", name="Send").click()
        await expect(patient.get_by_role("status")).to_contain_text("Thank you")
        await expect(patient.locator("#rated")).to_contain_text("4 out of 5")
    finally:
        await doctor_ctx.close()
        await patient_ctx.close()

    org, ref = setup["org"], f"Encounter/{setup['encounter']}"
    docs = await _stored(database_url, smtp[1], org, "DocumentReference", [("encounter", ref)])
    assert sorted((after.kind_of(d), d["docStatus"]) for d in docs) == [
        ("note", "final"),
        ("summary", "final"),
    ]
    conditions = await _stored(database_url, smtp[1], org, "Condition", [("encounter", ref)])
    assert [c["code"]["coding"][0]["code"] for c in conditions] == ["J02.9"]
    responses = await _stored(database_url, smtp[1], org, "QuestionnaireResponse", [("encounter", ref)])
    assert after.rating_of(responses[0]) == (4, "Sound cut out twice.", ["no-sound"])
    tasks = await _stored(
        database_url, smtp[1], org, "Task", [("focus", f"QuestionnaireResponse/{responses[0]['id']}")]
    )
    assert [inbox.kind_of(t) for t in tasks] == ["tech-problem"]
