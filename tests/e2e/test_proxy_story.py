"""A parent looks after two children's records on a phone, in Debian's Chromium against
``housecall serve``: after signing in they choose whose record to open, see that child's home page
and results, switch to the other child, and never see the first child's results there."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.identity import service
from tests.e2e.test_signin_phone import PHONE
from tests.identity.conftest import PASSWORD, Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer


@pytest.fixture
def server_env() -> dict[str, str]:
    return {
        "HOUSECALL_RESULT_RELEASE_HOURS": "0",  # results show at once: the story is about whose
    }


def glucose_report(patient: str, value: float, code: str, name: str) -> list[dict[str, Any]]:
    """A released-at-once lab report with one value, as a transaction's entries."""
    obs = f"urn:uuid:{secrets.token_hex(8)}-0000-4000-8000-000000000000"
    return [
        {"fullUrl": obs, "request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": name}]},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": "2026-11-20T09:00:00Z",
            "issued": "2026-11-20T12:00:00Z",
            "valueQuantity": {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
        }},
        {"request": {"method": "POST", "url": "DiagnosticReport"}, "resource": {
            "resourceType": "DiagnosticReport", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": name}], "text": name},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": "2026-11-20T09:00:00Z",
            "issued": "2026-11-20T12:00:00Z", "result": [{"reference": obs}],
        }},
    ]  # fmt: skip


async def family(database_url: str, smtp_port: int) -> tuple[str, str]:
    """A parent (proxy) with active grants for two children, each with a lab result: (e-mail, org)."""
    from housecall.fhir import bundles

    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    try:
        async with db.transaction() as conn:
            await service.create_organization(conn, org, "E2E Family Practice", settings=settings)
            ctx = ix.Ctx(conn, settings, "http://127.0.0.1/fhir", Access.system(org))
            kids = []
            for given, value, code, name in (
                ("Mia", 92.0, "2345-7", "Glucose"),
                ("Leo", 5.1, "2823-3", "Potassium"),
            ):
                out = await ix.create(ctx, "Patient", {"resourceType": "Patient", "birthDate": "2018-04-02",
                                                      "name": [{"given": [given], "family": "Reyes"}]})  # fmt: skip
                assert out.stored is not None
                kids.append(out.stored.res_id)
                await bundles.transaction(ctx, {"resourceType": "Bundle", "type": "transaction",
                                                "entry": glucose_report(out.stored.res_id, value, code, name)})  # fmt: skip
            parent = await service.create_account(
                conn,
                org,
                f"parent@{org}.example.org",
                "proxy",
                PASSWORD,
                display_name="Ana Reyes",
                settings=settings,
            )
            for kid in kids:
                await service.grant_proxy(conn, parent.id, kid, granted_by="system:test", relationship="parent",
                                          settings=settings)  # fmt: skip
    finally:
        await db.close()
    return parent.email, org


async def test_a_parent_switches_between_two_childrens_records(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    email, _org = await family(database_url, smtp[1])
    context = await browser.new_context(**PHONE, base_url=server.base)
    page = await context.new_page()
    await page.goto("/signin")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()

    # Nobody is chosen yet: the portal asks whose record to open.
    await expect(page.get_by_role("heading", name="Whose record do you want to open?")).to_be_visible()
    await page.get_by_label("Mia Reyes").check()
    await page.get_by_role("button", name="Switch").click()
    await expect(page.get_by_role("heading", name="Mia Reyes's home")).to_be_visible()
    await page.get_by_role("link", name="Test results").click()
    await expect(page.get_by_text("Glucose").first).to_be_visible()
    assert await page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"
    )  # no sideways scroll
    await expect(page.get_by_text("Potassium")).to_have_count(0)

    # Switch to the other child from the home page.
    await page.goto("/portal")
    await page.get_by_text("Switch to someone else").click()
    await page.get_by_label("Leo Reyes").check()
    await page.get_by_role("button", name="Switch").click()
    await expect(page.get_by_role("heading", name="Leo Reyes's home")).to_be_visible()
    await page.get_by_role("link", name="Test results").click()
    await expect(page.get_by_text("Potassium").first).to_be_visible()
    await expect(page.get_by_text("Glucose")).to_have_count(0)
    await context.close()
