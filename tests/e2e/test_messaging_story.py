"""The secure-messaging story in Debian's Chromium against ``housecall serve``: a patient on a
phone sends a message with a photo to the nurses' pool, a nurse sees it in the pool's inbox and
opens the photo, a clinician replies, the patient is told by e-mail (read from the local SMTP
server) and sees the reply. One browser context per person."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pyotp
from playwright.async_api import Browser, BrowserContext, Page, expect

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.identity import service
from tests.e2e.test_signin_phone import assert_phone_friendly
from tests.identity.conftest import PASSWORD, Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.support import REPO, LiveServer

PHONE = {
    "viewport": {"width": 375, "height": 667},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)


async def clinic(database_url: str, smtp_port: int) -> dict[str, Any]:
    """An organization with a nurses' pool, the patient Ana, Nurse Nolan and Dr Carter on her care
    team; the staff enrolled in two-step sign-in (their authenticator secrets are returned)."""
    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    out: dict[str, Any] = {"org": org}
    try:
        async with db.transaction() as conn:
            await service.create_organization(conn, org, "E2E Health", settings=settings)
            ctx = ix.Ctx(conn, settings, "http://127.0.0.1/fhir", Access.system(org))

            async def make(resource: dict[str, Any]) -> str:
                created = await ix.create(ctx, resource["resourceType"], resource)
                assert created.stored is not None
                return created.stored.res_id

            pool = await make(
                {"resourceType": "HealthcareService", "active": True, "name": "Primary care nurses"}
            )
            patient = await make({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Reyes"}]})
            carter = await make(
                {"resourceType": "Practitioner", "name": [{"given": ["Maya"], "family": "Carter"}]}
            )
            nolan = await make(
                {"resourceType": "Practitioner", "name": [{"given": ["Noor"], "family": "Nolan"}]}
            )
            for prac in (carter, nolan):
                await make({"resourceType": "PractitionerRole", "active": True,
                            "practitioner": {"reference": f"Practitioner/{prac}"},
                            "healthcareService": [{"reference": f"HealthcareService/{pool}"}]})  # fmt: skip
            await make({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
                        "participant": [{"member": {"reference": f"Practitioner/{carter}"}},
                                        {"member": {"reference": f"Practitioner/{nolan}"}}]})  # fmt: skip
            out["pool"] = pool
            out["patient"] = await service.create_account(
                conn, org, f"ana@{org}.example.org", "patient", PASSWORD, patient_id=patient,
                display_name="Ana Reyes", settings=settings,
            )  # fmt: skip
            for who, role, prac, name in (("nurse", "nurse", nolan, "Noor Nolan"),
                                          ("clinician", "clinician", carter, "Maya Carter")):  # fmt: skip
                account = await service.create_account(
                    conn, org, f"{who}@{org}.example.org", role, PASSWORD, practitioner_id=prac,
                    display_name=name, settings=settings,
                )  # fmt: skip
                secret = service.new_totp_secret()
                assert await service.confirm_totp_enrolment(
                    conn, account.id, secret, pyotp.TOTP(secret).now()
                )
                out[who] = account
                out[who + "_secret"] = secret
    finally:
        await db.close()
    return out


async def assert_accessible(page: Page) -> None:
    """Phone-friendly (no sideways scrolling, 44 px controls, no inline script or style) and no
    axe-core violations (WCAG 2.1 AA rules; axe is injected after the CSP checks, which the
    context bypasses for it alone)."""
    await assert_phone_friendly(page)
    await page.add_script_tag(path=str(AXE))
    violations = await page.evaluate(
        "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']})"
        ".then(r => r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))"
    )
    assert violations == [], violations


async def sign_in(context: BrowserContext, base: str, email: str, secret: str | None = None) -> Page:
    page = await context.new_page()
    await page.goto(base + "/signin")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    if secret is not None:
        totp = pyotp.TOTP(secret)
        # The enrolment used the current step; the next one is within the allowed drift.
        await page.get_by_label("6-digit code").fill(totp.at(time.time() + totp.interval))
        await page.get_by_role("button", name="Continue").click()
    return page


async def test_patient_message_reaches_the_pool_and_the_reply_comes_back(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    c = await clinic(database_url, smtp[1])
    base = server.base

    # The patient, on a phone, writes to the nurses with a photo.
    ana_context = await browser.new_context(**PHONE, bypass_csp=True)  # type: ignore[arg-type]
    ana = await sign_in(ana_context, base, c["patient"].email)
    await expect(ana.get_by_role("heading", name="Hello, Ana Reyes")).to_be_visible()
    await ana.get_by_role("link", name="Messages").click()
    await expect(ana.get_by_role("heading", name="Messages", exact=True)).to_be_visible()
    await assert_accessible(ana)
    await ana.get_by_label("Subject").fill("Rash on my arm")
    await ana.get_by_label("Who should read it").select_option(
        label="Primary care nurses — Expected reply: within 2 business days"
    )
    await ana.get_by_label("Message").fill("It itches since Monday. Photo attached.")
    # A file that is not a photo or PDF is refused beside the field; what was typed stays.
    await ana.get_by_label("Attach a file (optional)").set_input_files(
        {"name": "notes.html", "mimeType": "image/png", "buffer": b"<html>not a picture</html>"}
    )
    await ana.get_by_role("button", name="Send").click()
    await expect(ana.get_by_role("alert")).to_contain_text("The file must be a photo (PNG or JPEG) or a PDF.")
    await expect(ana.get_by_label("Attach a file (optional)")).to_have_attribute("aria-invalid", "true")
    await expect(ana.get_by_label("Subject")).to_have_value("Rash on my arm")
    await expect(ana.get_by_label("Message")).to_have_value("It itches since Monday. Photo attached.")
    await assert_accessible(ana)
    await ana.get_by_label("Attach a file (optional)").set_input_files(
        {"name": "rash.png", "mimeType": "image/png", "buffer": PNG}
    )
    await ana.get_by_role("button", name="Send").click()
    await expect(ana.get_by_role("status")).to_have_text("Your message was sent.")
    await expect(ana.get_by_text("Expected reply: within 2 business days")).to_be_visible()
    thread_path = ana.url.removeprefix(base).split("?")[0]
    assert thread_path.startswith("/portal/messages/")
    await assert_accessible(ana)

    # The nurse sees it in the pool's inbox and opens the photo.
    staff_context = await browser.new_context(accept_downloads=True, bypass_csp=True)
    nurse = await sign_in(staff_context, base, c["nurse"].email, c["nurse_secret"])
    await expect(nurse.get_by_role("heading", name="Inbox")).to_be_visible()
    await nurse.get_by_label("Pool").select_option(label="Primary care nurses ★")
    await nurse.get_by_role("button", name="Show").click()
    row = nurse.get_by_role("row").filter(has_text="Rash on my arm")
    await expect(row).to_contain_text("Ana Reyes")
    await expect(row).to_contain_text("Patient message")
    await row.get_by_role("link", name="Rash on my arm").click()
    await expect(nurse.get_by_text("It itches since Monday. Photo attached.")).to_be_visible()
    await assert_accessible(nurse)
    async with nurse.expect_download() as download_info:
        await nurse.get_by_role("link", name="Download rash.png").click()
    download = await download_info.value
    assert download.suggested_filename == "rash.png"
    assert Path(await download.path()).read_bytes() == PNG  # noqa: ASYNC240 - a small local file
    await staff_context.close()

    # A clinician of the team replies from the workspace; the inbox item is done.
    doctor_context = await browser.new_context()
    doctor = await sign_in(doctor_context, base, c["clinician"].email, c["clinician_secret"])
    await expect(doctor.get_by_role("heading", name="Inbox")).to_be_visible()
    await doctor.get_by_role("link", name="Patient messages").click()
    await doctor.get_by_role("link", name="Rash on my arm").click()
    await doctor.get_by_label("Your reply").fill(
        "Please use the cream twice a day and send a photo on Friday."
    )
    await doctor.get_by_role("button", name="Send reply").click()
    await expect(doctor.get_by_role("status")).to_have_text("Your reply was sent.")
    await expect(doctor.get_by_text("Done", exact=True)).to_be_visible()
    await doctor.get_by_role("link", name="Inbox").click()
    await expect(doctor.get_by_text("Rash on my arm")).to_have_count(0)
    await doctor_context.close()

    # The patient is told by e-mail with a link and no health information, and sees the reply.
    mail = smtp[0].wait_for(c["patient"].email, timeout=20)[-1]
    body = mail.get_payload(decode=True).decode() if not mail.is_multipart() else mail.as_string()
    assert "Rash" not in body and "cream" not in body and "Rash" not in str(mail["Subject"])
    mail_link = smtp[0].link(c["patient"].email)
    assert mail_link == base + thread_path, mail_link
    await ana.goto(base + "/portal")
    await expect(ana.get_by_text("unread message")).to_be_visible()
    await ana.goto(mail_link)
    await expect(
        ana.get_by_text("Please use the cream twice a day and send a photo on Friday.")
    ).to_be_visible()
    await expect(ana.get_by_text("Maya Carter")).to_be_visible()
    await ana.goto(base + "/portal")
    await expect(ana.get_by_text("unread message")).to_have_count(0)
    await ana_context.close()
