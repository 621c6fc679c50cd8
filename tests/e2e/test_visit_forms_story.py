"""Before a video visit, in Debian's Chromium against ``housecall serve``: the patient (who lives in
Vermont) books a video visit and is offered only the clinician licensed in Vermont, asks for an
interpreter, fills in the intake whose follow-up questions appear only after "Yes" to pain, and
gives consent to telehealth; the clinician then sees the answers from the visit page."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, expect

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.core.settings import get_settings
from housecall.fhir import interactions as ix
from housecall.identity import service, sessions
from tests.identity.conftest import PASSWORD, Mailbox, settings_for_tests, smtp  # noqa: F401
from tests.support import LiveServer, free_port
from tests.visits.conftest import license_

TZ = "America/New_York"
PHONE = {
    "viewport": {"width": 375, "height": 667},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
VR = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"}],
    "text": "Video visit",
}


@pytest.fixture
def server(
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> Iterator[LiveServer]:
    port = free_port()
    extra = {"HOUSECALL_PUBLIC_URL": f"http://127.0.0.1:{port}", "HOUSECALL_SMTP_PORT": str(smtp[1]),
             "HOUSECALL_ARGON2_TIME_COST": "1", "HOUSECALL_ARGON2_MEMORY_KIB": "1024",
             "HOUSECALL_ARGON2_PARALLELISM": "1"}  # fmt: skip
    live = LiveServer(database_url, port=port, extra_env=extra).start()
    get_settings.cache_clear()
    yield live
    live.stop()
    get_settings.cache_clear()


async def clinic(database_url: str, smtp_port: int) -> dict[str, Any]:
    """Dr Carter (licensed in Vermont) and Dr Lee (Maine only) both offer video visits; Ana Reyes
    lives in Vermont and has an account; Dr Carter has a signed-in session."""
    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    day = dt.datetime.now(ZoneInfo(TZ)).date() + dt.timedelta(days=3)
    out: dict[str, Any] = {"day": day}
    try:
        async with db.transaction() as conn:
            await service.create_organization(conn, org, "Lakeside Health", settings=settings)
            ctx = ix.Ctx(conn, settings, "http://127.0.0.1/fhir", Access.system(org))

            async def make(resource: dict[str, Any]) -> str:
                stored = (await ix.create(ctx, resource["resourceType"], resource)).stored
                assert stored is not None
                return str(stored.res_id)

            patient = await make({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Reyes"}],
                                  "address": [{"use": "home", "city": "Burlington", "state": "VT"}]})  # fmt: skip
            svc = await make({"resourceType": "HealthcareService", "active": True, "name": "Primary care visit",
                              "appointmentRequired": True})  # fmt: skip
            doctors = {}
            for given, family, state in (("Maya", "Carter", "VT"), ("Priya", "Lee", "ME")):
                prac = await make({"resourceType": "Practitioner", "name": [{"given": [given], "family": family}],
                                   "qualification": [license_(state)]})  # fmt: skip
                doctors[family] = prac
                role = await make({"resourceType": "PractitionerRole", "active": True,
                                   "practitioner": {"reference": f"Practitioner/{prac}"},
                                   "healthcareService": [{"reference": f"HealthcareService/{svc}"}]})  # fmt: skip
                sched = await make({"resourceType": "Schedule", "active": True,
                                    "actor": [{"reference": f"PractitionerRole/{role}"}]})  # fmt: skip
                for minute in (0, 20):
                    start = dt.datetime.combine(day, dt.time(10, minute), ZoneInfo(TZ))
                    await make({"resourceType": "Slot", "schedule": {"reference": f"Schedule/{sched}"},
                                "status": "free", "start": start.isoformat(),
                                "end": (start + dt.timedelta(minutes=20)).isoformat(), "appointmentType": VR})  # fmt: skip
            await make({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
                        "participant": [{"member": {"reference": f"Practitioner/{doctors['Carter']}"}}]})  # fmt: skip
            account = await service.create_account(conn, org, f"ana@{org}.example.org", "patient", PASSWORD,
                                                   patient_id=patient, display_name="Ana Reyes", settings=settings)  # fmt: skip
            out["email"] = account.email
            doctor = await service.create_account(conn, org, f"carter@{org}.example.org", "clinician", PASSWORD,
                                                  practitioner_id=doctors["Carter"], settings=settings)  # fmt: skip
            out["clinician"] = await sessions.start_session(conn, doctor, sessions.FULL)
    finally:
        await db.close()
    return out


async def test_a_video_visit_is_booked_with_a_licensed_clinician_and_its_intake_reaches_her(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    setup = await clinic(database_url, smtp[1])
    context = await browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(server.base + "/signin?next=/portal")
    await page.get_by_label("E-mail address").fill(setup["email"])
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Hello, Ana Reyes")).to_be_visible()

    # Book: the kind of visit and where she will be (her home state, Vermont, is assumed) …
    await page.goto(server.base + "/portal/appointments/book")
    await page.get_by_label("Kind of visit").select_option(label="Primary care visit")
    await expect(page.get_by_label("Where will you be during the visit?")).to_have_value("VT")
    await page.get_by_role("button", name="Next").click()
    # … only Dr Carter is offered for video; Dr Lee (licensed in Maine) for in-person visits only.
    licensed = page.locator('optgroup[label="Video, phone, chat or in person (licensed in Vermont)"] option')
    await expect(licensed).to_have_text(["Maya Carter"])
    await expect(
        page.locator('optgroup[label="In person only (not licensed in Vermont)"] option')
    ).to_have_text(["Priya Lee · in person only"])
    await page.get_by_label("Clinician").select_option(label="Maya Carter")
    await page.get_by_role("button", name="Show free times").click()
    await page.get_by_label("10:00 AM · Video").check()
    await page.get_by_label("Do you need an interpreter?").select_option(label="Spanish")
    await page.get_by_role("button", name="Book this time").click()
    await expect(page.get_by_role("status")).to_have_text("Your appointment is booked.")
    await expect(page.locator("main")).to_contain_text("Interpreter requested: Spanish")
    appointment = page.url.split("?")[0].rsplit("/", 1)[1]

    # The forms: the home page asks for them; the intake's follow-up questions appear after "Yes".
    await page.goto(server.base + "/portal")
    await expect(page.locator("main")).to_contain_text("Forms to complete before your visit on")
    await page.get_by_role("link", name="Fill in the forms").click()
    await page.get_by_role("link", name="Fill in: Before your visit").click()
    where = page.get_by_label("Where is the pain?")
    await expect(where).to_be_hidden()
    await page.get_by_label("What would you like to talk about at this visit?").fill("A cough for a week")
    await page.get_by_role("group", name="Do you have pain?").get_by_label("Yes").check()
    await expect(where).to_be_visible()
    await page.get_by_role("button", name="Save my answers").click()
    # Not answered: the server says so beside the field, and keeps what was typed.
    await expect(page.locator("#q-pain-where-error")).to_contain_text(
        "Answer this question: Where is the pain?"
    )
    await expect(page.get_by_label("What would you like to talk about at this visit?")).to_have_value(
        "A cough for a week"
    )
    await page.get_by_label("Where is the pain?").fill("Lower back")
    await page.get_by_label("How bad is the pain, from 0 (none) to 10 (the worst)?").fill("6")
    await page.get_by_role("button", name="Save my answers").click()
    await expect(page.get_by_role("status")).to_have_text("Thank you: your answers are saved.")
    await page.get_by_role("link", name="Fill in: Consent to telehealth").click()
    await (
        page.get_by_role("group", name="I agree to receive care by video, phone or chat.")
        .get_by_label("Yes")
        .check()
    )
    await page.get_by_role("button", name="Save my answers").click()
    await expect(page.locator("#visit-forms")).not_to_contain_text("To do")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await context.close()

    # The clinician opens the visit before it starts and reads the answers.
    doctor_ctx = await browser.new_context()
    await doctor_ctx.add_cookies([{"name": sessions.SESSION_COOKIE, "value": setup["clinician"], "domain": "127.0.0.1",
                                   "path": "/", "secure": True, "httpOnly": True, "sameSite": "Lax"}])  # fmt: skip
    doctor = await doctor_ctx.new_page()
    await doctor.goto(f"{server.base}/visits/{appointment}")
    await expect(doctor.locator("#visit-before")).to_contain_text("Interpreter requested: Spanish")
    await doctor.get_by_role("link", name="Intake answers").click()
    main = doctor.locator("main")
    await expect(main).to_contain_text("Where is the pain?")
    await expect(main).to_contain_text("Lower back")
    await expect(main).to_contain_text("Consent to telehealth · Done")
    await doctor_ctx.close()
