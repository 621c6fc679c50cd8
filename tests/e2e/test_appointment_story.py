"""An appointment's life in Debian's Chromium on a phone, against ``housecall serve``: the patient
books a video visit from the free times, is reminded by e-mail when the reminder's time comes (the
clock of the worker is moved, not slept), moves the visit, and cancels it; the cancelled visit gets
no further reminder."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, expect

from housecall.access.policy import Access
from housecall.core import jobs
from housecall.core.db import Database, open_database
from housecall.core.settings import get_settings
from housecall.fhir import interactions as ix
from housecall.identity import service
from housecall.identity.clock import clock
from tests.identity.conftest import PASSWORD, Mailbox, _clock_back, settings_for_tests, smtp  # noqa: F401
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
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LiveServer]:
    port = free_port()
    extra = {"HOUSECALL_PUBLIC_URL": f"http://127.0.0.1:{port}", "HOUSECALL_SMTP_PORT": str(smtp[1]),
             "HOUSECALL_ARGON2_TIME_COST": "1", "HOUSECALL_ARGON2_MEMORY_KIB": "1024",
             "HOUSECALL_ARGON2_PARALLELISM": "1"}  # fmt: skip
    live = LiveServer(database_url, port=port, extra_env=extra).start()
    for name, value in extra.items():  # the worker this test runs reads the same settings
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield live
    live.stop()
    get_settings.cache_clear()


def local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), ZoneInfo(TZ))


async def clinic(db: Database, database_url: str, smtp_port: int) -> tuple[str, dt.date]:
    """A clinic with Dr Carter's video mornings and a patient with an account; returns (e-mail, day)."""
    settings = settings_for_tests(database_url, smtp_port)
    org = "e2e-" + secrets.token_hex(4)
    day = dt.datetime.now(ZoneInfo(TZ)).date() + dt.timedelta(days=3)
    async with db.transaction() as conn:
        await service.create_organization(conn, org, "Lakeside Health", settings=settings)
        ctx = ix.Ctx(conn, settings, "http://127.0.0.1/fhir", Access.system(org))

        async def make(resource: dict[str, Any]) -> str:
            out = await ix.create(ctx, resource["resourceType"], resource)
            assert out.stored is not None
            return out.stored.res_id

        # Video visits need a clinician licensed where the patient is (decision 0020): both in Vermont.
        patient = await make({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Reyes"}],
                              "address": [{"use": "home", "city": "Burlington", "state": "VT"}]})  # fmt: skip
        svc = await make({"resourceType": "HealthcareService", "active": True, "name": "Primary care visit",
                          "appointmentRequired": True})  # fmt: skip
        prac = await make({"resourceType": "Practitioner", "name": [{"given": ["Maya"], "family": "Carter"}],
                           "qualification": [license_("VT")]})  # fmt: skip
        role = await make({"resourceType": "PractitionerRole", "active": True,
                           "practitioner": {"reference": f"Practitioner/{prac}"},
                           "healthcareService": [{"reference": f"HealthcareService/{svc}"}]})  # fmt: skip
        sched = await make({"resourceType": "Schedule", "active": True,
                            "actor": [{"reference": f"PractitionerRole/{role}"}]})  # fmt: skip
        for minute in (0, 20, 40):
            start = local(day, 10, minute)
            await make({"resourceType": "Slot", "schedule": {"reference": f"Schedule/{sched}"}, "status": "free",
                        "start": start.isoformat(), "end": (start + dt.timedelta(minutes=20)).isoformat(),
                        "appointmentType": VR})  # fmt: skip
        account = await service.create_account(conn, org, f"ana@{org}.example.org", "patient", PASSWORD,
                                               patient_id=patient, display_name="Ana Reyes", settings=settings)  # fmt: skip
    return account.email, day


async def run_worker(db: Database) -> int:
    total = 0
    while ran := await jobs.work_once(db):
        total += ran
    return total


def reminders(mailbox: Mailbox, email: str, count: int) -> list[str]:
    """The appointment reminders mailed (not the reminders to fill in a video visit's forms),
    waiting a little for ``count`` of them."""
    deadline = time.monotonic() + 5
    while True:
        texts = [m.get_payload(decode=True).decode() for m in mailbox.for_address(email)]
        found = [t for t in texts if "appointment coming up" in t]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def until(moment: dt.datetime) -> float:
    return (moment - dt.datetime.fromtimestamp(clock.now(), dt.UTC)).total_seconds()


async def test_an_appointment_is_booked_reminded_moved_and_cancelled(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    db = open_database(database_url)
    await db.connect()
    try:
        email, day = await clinic(db, database_url, smtp[1])
        page = await (await browser.new_context(**PHONE)).new_page()  # type: ignore[arg-type]
        await page.goto(server.base + "/signin?next=/portal")
        await page.get_by_label("E-mail address").fill(email)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Hello, Ana Reyes")).to_be_visible()

        # Book: kind of visit, clinician, a free time (shown in New York time).
        await page.get_by_role("link", name="Appointments").click()
        await page.get_by_role("link", name="Book an appointment").click()
        await page.get_by_label("Kind of visit").select_option(label="Primary care visit")
        await page.get_by_role("button", name="Next").click()
        await page.get_by_label("Clinician").select_option(label="Maya Carter")
        await page.get_by_role("button", name="Show free times").click()
        await expect(page.get_by_text("America/New_York").first).to_be_visible()
        await page.get_by_label("10:00 AM · Video").check()
        await page.get_by_role("button", name="Book this time").click()
        await expect(page.get_by_role("status")).to_have_text("Your appointment is booked.")
        await expect(page.locator("main")).to_contain_text("Maya Carter")
        appt_url = page.url.split("?")[0]
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert await page.locator("script").count() == 0 and await page.locator("[style]").count() == 0

        # The calendar file: UTC times, the visit type and clinic only.
        ics = await page.request.get(appt_url + "/calendar.ics")
        assert ics.headers["content-type"].startswith("text/calendar")
        body = (await ics.text()).replace("\r\n ", "")
        assert "DTSTART:" + local(day, 10).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ") in body
        assert "Lakeside Health" in body and "Carter" not in body

        # The home page shows the visit with its Join button.
        await page.goto(server.base + "/portal")
        await expect(page.get_by_role("link", name="Join")).to_have_attribute(
            "href", appt_url.replace(server.base, "")
        )

        # The reminder: nothing before its time; the 24-hour one when the clock reaches it.
        await run_worker(db)
        assert smtp[0].for_address(email) == []
        clock.advance(until(local(day, 10)) - 23 * 3600)
        await run_worker(db)
        mail = reminders(smtp[0], email, 1)
        assert len(mail) == 1
        text = mail[0]
        assert appt_url in text and "Carter" not in text
        clock.reset()

        # Follow the reminder's link and move the visit to 10:40.
        await page.goto(appt_url)
        await page.get_by_role("link", name="Change the time").click()
        await page.get_by_label("10:40 AM · Video").check()
        await page.get_by_role("button", name="Move to this time").click()
        await expect(page.get_by_role("status")).to_have_text("Your appointment has been moved.")
        await expect(page.locator("main")).to_contain_text("10:40")

        # Cancel it: the list shows it cancelled, and no reminder goes out for it any more.
        await page.get_by_role("button", name="Cancel this appointment").click()
        await expect(page.get_by_role("status")).to_have_text("Your appointment is cancelled.")
        await page.get_by_role("link", name="All appointments").click()
        await expect(page.locator("main")).to_contain_text("Cancelled")
        await expect(page.get_by_text("You have no upcoming appointments.")).to_be_visible()
        clock.advance(until(local(day, 10, 40)) - 60)
        await run_worker(db)
        assert len(reminders(smtp[0], email, 0)) == 1
    finally:
        clock.reset()
        await db.close()
