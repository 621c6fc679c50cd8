"""A patient pays a bill on a phone, in Debian's Chromium against ``housecall serve``: the home page
says what is due, a mistyped card number is caught beside the field, a part payment and then the
rest are taken, the receipt downloads as a PDF, and the statement ends paid."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.identity import service
from tests.e2e.test_signin_phone import PHONE, assert_phone_friendly
from tests.identity.conftest import PASSWORD, Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer


async def patient_with_a_bill(database_url: str, smtp_port: int) -> tuple[str, str]:
    """An organization, a patient with an account and one issued statement of $80.00: (e-mail, invoice id)."""
    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    try:
        async with db.transaction() as conn:
            await service.create_organization(conn, org, "E2E Health", settings=settings)
            ctx = ix.Ctx(conn, settings, "http://127.0.0.1/fhir", Access.system(org))

            async def make(resource: dict[str, Any]) -> str:
                out = await ix.create(ctx, resource["resourceType"], resource)
                assert out.stored is not None
                return str(out.stored.res_id)

            patient = await make({"resourceType": "Patient", "name": [{"given": ["Rosa"], "family": "Diaz"}]})
            invoice = await make({
                "resourceType": "Invoice", "status": "issued", "date": "2026-11-02",
                "identifier": [{"system": "urn:housecall:statement", "value": "ST-7001"}],
                "subject": {"reference": f"Patient/{patient}"},
                "issuer": {"display": "E2E Health"},
                "lineItem": [{"sequence": 1, "chargeItemCodeableConcept": {"text": "Video visit, established patient"},
                              "priceComponent": [{"type": "base", "amount": {"value": 80.0, "currency": "USD"}}]}],
                "totalGross": {"value": 80.0, "currency": "USD"},
            })  # fmt: skip
            account = await service.create_account(
                conn, org, f"rosa@{org}.example.org", "patient", PASSWORD,
                patient_id=patient, display_name="Rosa Diaz", settings=settings,
            )  # fmt: skip
        return account.email, invoice
    finally:
        await db.close()


async def test_a_patient_pays_a_bill_in_two_parts_on_a_phone(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    email, invoice = await patient_with_a_bill(database_url, smtp[1])
    context = await browser.new_context(**PHONE, accept_downloads=True)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(server.base + "/signin")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()

    # The home page says what is due; "Pay" leads to the bills.
    await expect(page.get_by_text("Balance due: $80.00")).to_be_visible()
    await page.get_by_role("link", name="Pay").click()
    await expect(page.get_by_role("heading", name="Bills")).to_be_visible()
    await page.get_by_role("link", name="View and pay").click()
    await expect(page.get_by_role("heading", name="Statement ST-7001")).to_be_visible()
    await assert_phone_friendly(page)

    # A mistyped card number: the error is beside the field, and what was typed is still there.
    amount = page.get_by_label("Amount to pay (US dollars)")
    await expect(amount).to_have_value("80.00")
    await amount.fill("30")
    await page.get_by_label("Card number").fill("4242 4242 4242 4241")
    await page.get_by_label("Expiry date (MM/YY)").fill("12/39")
    await page.get_by_label("Security code").fill("123")
    await page.get_by_role("button", name="Pay now").click()
    await expect(page.get_by_role("alert")).to_contain_text("The card number is not right.")
    await expect(page.get_by_label("Card number")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Card number")).to_have_value("4242 4242 4242 4241")
    await expect(page.get_by_label("Amount to pay (US dollars)")).to_have_value("30")
    await page.get_by_role("link", name="The card number is not right. Check it and try again.").click()
    await expect(page.get_by_label("Card number")).to_be_focused()

    # Part of the balance, then the rest.
    await page.get_by_label("Card number").fill("4242 4242 4242 4242")
    await page.get_by_label("Security code").fill("123")
    await page.get_by_role("button", name="Pay now").click()
    await expect(page.get_by_role("heading", name="Payment receipt")).to_be_visible()
    await expect(page.get_by_text("Visa ending in 4242")).to_be_visible()
    await expect(page.locator("dd").filter(has_text="$50.00")).to_be_visible()  # still owed
    await page.get_by_role("link", name="ST-7001").click()
    await expect(page.locator("#balance")).to_have_text("$50.00")
    await page.get_by_label("Card number").fill("4242424242424242")
    await page.get_by_label("Expiry date (MM/YY)").fill("12/39")
    await page.get_by_label("Security code").fill("321")
    await page.get_by_role("button", name="Pay now").click()
    await expect(page.get_by_role("heading", name="Payment receipt")).to_be_visible()

    # The receipt downloads as a PDF.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download the receipt (PDF)").click()
    download = await info.value
    path = await download.path()
    assert path is not None
    body = await asyncio.to_thread(Path(path).read_bytes)
    assert body.startswith(b"%PDF") and b"Payment receipt" in body and b"$50.00" in body

    # The statement is paid; the home page no longer asks for money.
    await page.get_by_role("link", name="All bills").click()
    await expect(page.get_by_text("You have nothing to pay. Thank you.")).to_be_visible()
    await page.goto(server.base + f"/portal/bills/{invoice}")
    await expect(page.get_by_text("This statement is paid in full.")).to_be_visible()
    await page.goto(server.base + "/portal")
    await expect(page.get_by_text("Nothing needs your attention right now.")).to_be_visible()
    await context.close()
