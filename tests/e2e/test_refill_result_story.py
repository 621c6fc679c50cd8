"""A patient and a clinician in two browsers (Debian's Chromium, against ``housecall serve``):
two refill requests, one approved and one denied with a reason; a lab result released by the
clinician with a note, then read and charted by the patient."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
from playwright.async_api import Browser, Page, expect

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.identity import service
from housecall.refills import service as refills
from housecall.results import service as results
from housecall.web.records import Records
from tests.identity.conftest import PASSWORD, Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer

PHONE = {
    "viewport": {"width": 375, "height": 667},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def medicine(patient: str, prescriber: str, code: str, name: str, sig: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": name}]},
        "subject": {"reference": f"Patient/{patient}"}, "requester": {"reference": f"Practitioner/{prescriber}"},
        "authoredOn": "2026-06-02T15:30:00Z", "dosageInstruction": [{"text": sig}],
        "dispenseRequest": {"numberOfRepeatsAllowed": 1, "quantity": {"value": 30, "unit": "tablet"}},
    }  # fmt: skip


def a1c(obs_id: str, patient: str, value: float, drawn: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": obs_id, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "4548-4", "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}]},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": iso(drawn),
        "valueQuantity": {"value": value, "unit": "%"},
        "referenceRange": [{"low": {"value": 4.0, "unit": "%"}, "high": {"value": 5.6, "unit": "%"}}],
    }  # fmt: skip


async def clinic(database_url: str, smtp_port: int) -> dict[str, Any]:
    """An organization with a pool, Dr Carter and her patient Ana: two medicines, a pharmacy, two
    released A1c results from the past year and yesterday's, waiting for review."""
    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    now = datetime.now(UTC)
    try:
        async with db.transaction() as conn:
            await service.create_organization(conn, org, "E2E Health", settings=settings)
            rec = Records(ix.Ctx(conn, settings, "http://127.0.0.1/fhir", Access.system(org)))

            async def make(resource: dict[str, Any]) -> str:
                return str((await rec.create(resource["resourceType"], resource))["id"])

            pool = await make({"resourceType": "HealthcareService", "active": True, "name": "Primary care"})
            patient = await make({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Reyes"}]})
            carter = await make(
                {"resourceType": "Practitioner", "name": [{"given": ["Maya"], "family": "Carter"}]}
            )
            await make({"resourceType": "PractitionerRole", "active": True,
                        "practitioner": {"reference": f"Practitioner/{carter}"},
                        "healthcareService": [{"reference": f"HealthcareService/{pool}"}]})  # fmt: skip
            await make({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
                        "participant": [{"member": {"reference": f"Practitioner/{carter}"}}]})  # fmt: skip
            await make({"resourceType": "Organization", "active": True, "name": "Lakeside Pharmacy",
                        "type": [{"coding": [{"system": refills.PHARMACY_SYSTEM, "code": refills.PHARMACY_CODE}]}]})  # fmt: skip
            await make(
                medicine(patient, carter, "314076", "Lisinopril 10 mg oral tablet", "1 tablet once a day")
            )
            await make(
                medicine(patient, carter, "617312", "Atorvastatin 20 mg oral tablet", "1 tablet at night")
            )
            report = None
            for i, (value, days) in enumerate(((6.2, 300), (7.1, 120), (7.6, 1))):
                drawn = now - timedelta(days=days)
                obs = await make(a1c(f"a1c-{org}-{i}", patient, value, drawn))
                report = await rec.create("DiagnosticReport", {
                    "resourceType": "DiagnosticReport", "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "4548-4", "display": "Hemoglobin A1c"}]},
                    "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": iso(drawn),
                    "issued": iso(drawn + timedelta(hours=6)), "result": [{"reference": f"Observation/{obs}"}],
                })  # fmt: skip
            assert report is not None
            await results.open_review(rec, report, pool)
            ana = await service.create_account(conn, org, f"ana@{org}.example.org", "patient", PASSWORD,
                                               patient_id=patient, display_name="Ana Reyes", settings=settings)  # fmt: skip
            doc = await service.create_account(conn, org, f"carter@{org}.example.org", "clinician", PASSWORD,
                                               practitioner_id=carter, display_name="Dr Maya Carter", settings=settings)  # fmt: skip
    finally:
        await db.close()
    return {"ana": ana, "carter": doc, "report": report["id"]}


async def sign_in(page: Page, base: str, email: str) -> None:
    await page.goto(base + "/signin")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


async def clean(page: Page) -> None:
    """No script, no inline style, no sideways scrolling; then no WCAG 2 A/AA violations that
    axe-core finds (injected into the page after the first checks: the CSP is bypassed for it)."""
    assert await page.locator("script").count() == 0
    assert await page.locator("[style]").count() == 0
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.add_script_tag(path=str(AXE))
    violations = await page.evaluate(
        """async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']})).violations
             .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"""
    )
    assert violations == [], (page.url, violations)


async def test_refills_approved_and_denied_and_a_result_released_then_charted(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    people = await clinic(database_url, smtp[1])
    ana_ctx = await browser.new_context(**PHONE, bypass_csp=True)  # type: ignore[arg-type]
    doc_ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    ana, doc = await ana_ctx.new_page(), await doc_ctx.new_page()

    # Ana asks for two refills from her medicine list.
    await sign_in(ana, server.base, people["ana"].email)
    await expect(ana.get_by_role("heading", name="Hello, Ana Reyes")).to_be_visible()
    await ana.get_by_role("link", name="Medicines").click()
    await clean(ana)
    for name, note in (("Lisinopril", "Running out on Friday"), ("Atorvastatin", "")):
        card = ana.locator("li.card", has_text=name)
        await card.get_by_text("Request a refill").click()
        await card.get_by_label("Pharmacy", exact=True).select_option(label="Lakeside Pharmacy")
        if note:
            await card.get_by_label("Note for your care team (optional)").fill(note)
        await card.get_by_role("button", name="Send the refill request").click()
        await expect(ana.get_by_role("status")).to_contain_text("Your refill request was sent")
    await expect(ana.get_by_text("Status: waiting for your care team")).to_have_count(2)
    await clean(ana)

    # Dr Carter signs in (setting up two-step sign-in) and works her inbox.
    await sign_in(doc, server.base, people["carter"].email)
    secret = (await doc.locator("#totp-secret").inner_text()).replace(" ", "")
    await doc.get_by_label("6-digit code").fill(pyotp.TOTP(secret).now())
    await doc.get_by_role("button", name="Turn on two-step sign-in").click()
    await doc.get_by_role("link", name="I saved them, continue").click()
    await expect(doc.get_by_role("heading", name="Inbox")).to_be_visible()
    await doc.get_by_role("link", name="Refill: Lisinopril 10 mg oral tablet").click()
    await expect(doc.get_by_text("Running out on Friday")).to_be_visible()
    await doc.get_by_role("button", name="Approve and send the prescription").click()
    await expect(doc.get_by_text("Approved: a new prescription was written.")).to_be_visible()

    await doc.goto(server.base + "/workspace")
    await doc.get_by_role("link", name="Refill: Atorvastatin 20 mg oral tablet").click()
    await doc.get_by_role("button", name="Deny the refill").click()  # no reason yet
    await expect(doc.get_by_role("alert")).to_contain_text("Write the reason")
    reason = doc.get_by_label("Reason (the patient will read it)")
    await expect(reason).to_have_attribute("aria-invalid", "true")
    await clean(doc)
    await reason.fill("Please book a cholesterol check first.")
    await doc.get_by_role("button", name="Deny the refill").click()
    await expect(doc.get_by_text("Not approved. Reason given to the patient")).to_be_visible()

    # Ana sees both answers.
    await ana.goto(server.base + "/portal/medications")
    approved = ana.locator(".refill-approved")
    await expect(approved).to_contain_text("Status: approved")
    await expect(approved).to_contain_text("The prescription was sent to Lakeside Pharmacy.")
    denied = ana.locator(".refill-denied")
    await expect(denied).to_contain_text("Reason: Please book a cholesterol check first.")

    # Yesterday's A1c is not in Ana's results until Dr Carter releases it.
    await ana.get_by_role("link", name="Test results").click()
    await expect(ana.locator(".results-list li")).to_have_count(2)
    await doc.goto(server.base + "/workspace")
    await doc.get_by_role("link", name="Result: Hemoglobin A1c").click()
    await clean(doc)
    await doc.get_by_label("Note to the patient (optional)").fill(
        "Higher than last time; let us talk about it."
    )
    await doc.get_by_role("button", name="Mark reviewed and release").click()
    await expect(doc.get_by_text("Yes: released by Maya Carter")).to_be_visible()

    await ana.reload()
    await expect(ana.locator(".results-list li")).to_have_count(3)
    await clean(ana)
    await ana.locator(".results-list li").first.get_by_role("link").click()
    await expect(ana.get_by_text("Higher than last time; let us talk about it.")).to_be_visible()
    await expect(ana.get_by_role("cell", name="High")).to_be_visible()
    await clean(ana)
    await ana.get_by_role("link", name="See the trend").click()
    chart = ana.get_by_role("img", name="Average blood sugar, last 3 months (A1c) over time")
    await expect(chart).to_be_visible()
    await clean(ana)
    assert await ana.locator("svg.trend-chart .point").count() == 3
    assert await ana.locator("svg.trend-chart .range-band").count() == 1
    await ana.get_by_text("The same results as a table").click()
    await expect(ana.get_by_role("table")).to_contain_text("7.6 %")
    await ana_ctx.close()
    await doc_ctx.close()
