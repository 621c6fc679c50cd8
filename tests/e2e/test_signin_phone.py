"""Sign-in, MFA enrolment and the MFA challenge in Debian's Chromium on a phone-sized screen,
against ``housecall serve`` on 127.0.0.1, the way a nurse on a phone meets them."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pyotp
from playwright.async_api import Browser, Page, expect

from housecall.core.db import open_database
from housecall.identity import service
from tests.identity.conftest import PASSWORD, Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer

PHONE = {
    "viewport": {"width": 375, "height": 667},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


async def nurse_account(database_url: str, smtp_port: int) -> service.Account:
    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    try:
        async with db.transaction() as conn:
            await service.create_organization(conn, org, "E2E Health", settings=settings)
            return await service.create_account(
                conn,
                org,
                f"nurse@{org}.example.org",
                "nurse",
                PASSWORD,
                display_name="Nina Nurse",
                settings=settings,
            )
    finally:
        await db.close()


async def assert_phone_friendly(page: Page) -> None:
    """No sideways scrolling; every control at least 44 px tall (WCAG 2.5.5); a lang attribute."""
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert await page.get_attribute("html", "lang") == "en"
    sizes: list[dict[str, Any]] = await page.evaluate(
        """[...document.querySelectorAll('main button, main input:not([type=hidden]), main .button')]
             .filter(e => e.offsetParent !== null)
             .map(e => ({name: e.name || e.textContent.trim(), h: e.getBoundingClientRect().height}))"""
    )
    small = [s for s in sizes if s["h"] < 44]
    assert sizes and not small, small
    assert await page.locator("script").count() == 0
    assert await page.locator("[style]").count() == 0


async def test_nurse_signs_in_enrols_mfa_and_passes_the_challenge_on_a_phone(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    account = await nurse_account(database_url, smtp[1])
    context = await browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = await context.new_page()

    # A wrong password: the error summary links to the highlighted field.
    await page.goto(server.base + "/signin?next=/account")
    await assert_phone_friendly(page)
    await page.get_by_label("E-mail address").fill(account.email)
    await page.get_by_label("Password").fill("not my password at all")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("The e-mail address or password is not right.")
    await expect(page.get_by_label("E-mail address")).to_have_attribute("aria-invalid", "true")
    await page.get_by_role("link", name="The e-mail address or password is not right.").click()
    await expect(page.get_by_label("E-mail address")).to_be_focused()
    assert await page.get_by_label("Password").get_attribute("autocomplete") == "current-password"

    # The right password: a nurse must set up two-step sign-in before anything else.
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(server.base + "/mfa/enrol?next=/account")
    await page.goto(server.base + "/account")
    await expect(page).to_have_url(server.base + "/mfa/enrol")
    await expect(page.get_by_role("img", name="QR code")).to_be_visible()
    await assert_phone_friendly(page)
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    totp = pyotp.TOTP(secret)
    await page.get_by_label("6-digit code").fill(totp.now())
    await page.get_by_role("button", name="Turn on two-step sign-in").click()
    await expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    assert await page.locator(".codes code").count() == 10
    await page.get_by_role("link", name="I saved them, continue").click()
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()  # a nurse starts at the inbox
    await page.get_by_role("link", name=account.display_name).click()
    await expect(page.get_by_text(account.email)).to_be_visible()

    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["__Host-hc_session"]
    assert (
        session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax" and session["path"] == "/"
    )

    # Sign out, then sign in again: this time the app asks for the code.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    assert "__Host-hc_session" not in {c["name"] for c in await context.cookies()}
    await page.get_by_label("E-mail address").fill(account.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(
        page.get_by_role("heading", name="Enter the code from your authenticator app")
    ).to_be_visible()
    await assert_phone_friendly(page)
    code_box = page.get_by_label("6-digit code")
    assert await code_box.get_attribute("autocomplete") == "one-time-code"
    assert await code_box.get_attribute("inputmode") == "numeric"
    # The enrolment used the current 30-second step; the next step is within the allowed drift.
    await code_box.fill(totp.at(time.time() + totp.interval))
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    await context.close()


async def test_a_patient_resets_a_forgotten_password_from_the_mailed_link_on_a_phone(
    server: LiveServer,
    browser: Browser,
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    settings = settings_for_tests(database_url, smtp[1])
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    try:
        async with db.transaction() as conn:
            await service.create_organization(conn, org, "E2E Health", settings=settings)
            account = await service.create_account(
                conn, org, f"mum@{org}.example.org", "proxy", PASSWORD, display_name="Mum", settings=settings
            )
    finally:
        await db.close()
    context = await browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(server.base + "/signin")
    await page.get_by_role("link", name="Forgot your password?").click()
    await assert_phone_friendly(page)
    await page.get_by_label("E-mail address").fill(account.email)
    await page.get_by_role("button", name="Send the link").click()
    await expect(page.get_by_role("heading", name="Check your e-mail")).to_be_visible()
    link = smtp[0].link(account.email)
    assert link.startswith(server.base + "/password/reset?token=")
    await page.goto(link)
    await assert_phone_friendly(page)
    new_password = page.get_by_label("New password")
    assert await new_password.get_attribute("autocomplete") == "new-password"
    await new_password.fill("password1234")
    await page.get_by_role("button", name="Save the password").click()
    await expect(page.get_by_role("alert")).to_contain_text("data breaches")
    await expect(page.get_by_label("New password")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("New password").fill("three unrelated words here")
    await page.get_by_role("button", name="Save the password").click()
    await expect(page.get_by_role("heading", name="Password saved")).to_be_visible()
    await page.get_by_role("link", name="Sign in").click()
    await page.get_by_label("E-mail address").fill(account.email)
    await page.get_by_label("Password").fill("three unrelated words here")
    await page.get_by_role("button", name="Sign in").click()
    # A proxy nobody has shared a record with yet is told so.
    await expect(page.get_by_role("heading", name="Nobody has shared a record with you yet")).to_be_visible()
    await page.goto(link)  # the link was used up
    await expect(page.get_by_role("heading", name="This link does not work")).to_be_visible()
    await context.close()
