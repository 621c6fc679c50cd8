"""The notification pages on both engines: each account chooses its channels and language (with the
problem shown beside the field), and admins and front desk see what went out, masked; nobody else
does."""

from __future__ import annotations

import re

import httpx

from housecall.fhir import interactions as ix
from housecall.identity import service as identity
from housecall.notify import Kind, send
from housecall.notify import service as notify
from housecall.notify.texts import Language
from tests.identity.conftest import PASSWORD, Env
from tests.notify.conftest import work


def checked(html: str, name: str) -> bool:
    tag = re.search(rf'<input type="checkbox" id="{name}"[^>]*>', html)
    assert tag, name
    return " checked" in tag.group(0)


def selected_language(html: str) -> str:
    match = re.search(r'<option value="(\w+)" lang="\w+" selected>', html)
    assert match
    return match.group(1)


async def save(env: Env, browser: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await env.post(browser, "/account/notifications", form)


async def test_the_account_page_links_to_the_choices_and_the_defaults_are_email_in_english(env: Env) -> None:
    browser, _patient = await env.patient_session()
    assert 'href="/account/notifications"' in (await browser.get("/account")).text
    page = await browser.get("/account/notifications")
    assert page.status_code == 200
    assert checked(page.text, "email") and not checked(page.text, "sms") and not checked(page.text, "push")
    assert selected_language(page.text) == "en"
    assert 'href="/admin/outbox"' not in (await browser.get("/account")).text


async def test_a_bad_phone_number_is_shown_beside_the_field_and_nothing_is_saved(env: Env) -> None:
    browser, patient = await env.patient_session()
    r = await save(env, browser, sms="on", push="on", phone="555-CALL-ME", language="es")
    assert r.status_code == 400
    assert '<div class="field field-error">\n  <label for="phone">' in r.text
    assert re.search(
        r'<input id="phone" name="phone" type="tel" value="555-CALL-ME"[^>]*aria-invalid="true"', r.text
    )
    assert 'id="phone-error"' in r.text and "country code" in r.text
    assert '<a href="#phone">' in r.text  # the summary at the top leads to it
    # What was chosen is kept on the page: SMS and push on, e-mail off, Spanish.
    assert checked(r.text, "sms") and checked(r.text, "push") and not checked(r.text, "email")
    assert selected_language(r.text) == "es"
    async with env.db.reader() as conn:
        assert await notify.get_preferences(conn, patient.id) == notify.Preferences()

    r = await save(env, browser, sms="on", phone=" ", language="en", email="on")
    assert r.status_code == 400 and "Enter the mobile number for text messages" in r.text
    r = await save(env, browser, email="on", language="klingon")
    assert r.status_code == 400 and '<a href="#language">' in r.text and 'aria-invalid="true"' in r.text


async def test_saved_choices_are_shown_again_and_used_for_the_next_notification(env: Env) -> None:
    browser, patient = await env.patient_session()
    r = await save(env, browser, sms="on", phone="+1 (555) 010-0142", language="es")
    assert r.status_code == 303 and r.headers["location"] == "/account/notifications?notice=saved"
    page = await browser.get(r.headers["location"])
    assert "Your choices are saved." in page.text
    assert checked(page.text, "sms") and not checked(page.text, "email")
    assert 'value="+15550100142"' in page.text and selected_language(page.text) == "es"
    async with env.db.reader() as conn:
        prefs = await notify.get_preferences(conn, patient.id)
    assert prefs == notify.Preferences(email=False, sms=True, phone="+15550100142", language=Language.ES)

    async with env.db.transaction() as conn:
        await send(conn, env.org_id, patient.id, Kind.STATEMENT_READY, "/billing")
    await work(env.db)
    async with env.db.reader() as conn:
        sent = await conn.fetch(
            "SELECT o.address, o.text FROM notification_outbox o JOIN notification n ON n.id = o.delivery_id "
            "WHERE n.account_id = $1",
            patient.id,
        )
    assert [tuple(r) for r in sent] == [
        ("+15550100142", "Tiene un estado de cuenta nuevo en Housecall. https://testserver/billing")
    ]
    assert env.mail.for_address(patient.email) == []


async def test_admins_and_front_desk_see_the_outbox_masked_and_nobody_else_does(env: Env) -> None:
    patient = await env.account("patient")
    async with env.db.transaction() as conn:
        await notify.save_preferences(conn, patient.id, notify.Preferences(sms=True, phone="+15550100177"))
        await send(conn, env.org_id, patient.id, Kind.REFILL_DECIDED, "/refills/r1")
    await work(env.db)

    admin, _a, _s = await env.staff_session("org_admin")
    front_desk, _f, _s = await env.staff_session("front_desk")
    for browser in (admin, front_desk):
        assert 'href="/admin/outbox"' in (await browser.get("/account")).text
        page = await browser.get("/admin/outbox")
        assert page.status_code == 200
        assert "•••0177" in page.text and patient.email[0] + "•••@" in page.text
        assert "Request answered" in page.text and "Text message" in page.text
        for hidden in ("+15550100177", patient.email, "/refills/r1", patient.display_name):
            assert hidden not in page.text

    only_sms = await admin.get("/admin/outbox", params={"channel": "sms", "status": "sent"})
    assert "•••0177" in only_sms.text and patient.email[0] + "•••@" not in only_sms.text
    assert (await admin.get("/admin/outbox", params={"channel": "fax"})).status_code == 200

    patient_browser, _p = await env.patient_session()
    nurse, _n, _s = await env.staff_session("nurse")
    clinician, _c, _s = await env.staff_session("clinician")
    for browser in (patient_browser, nurse, clinician):
        r = await browser.get("/admin/outbox")
        assert r.status_code == 404 and "0177" not in r.text
    assert (await env.client().get("/admin/outbox")).status_code == 303  # to sign-in


async def test_another_organizations_deliveries_are_not_listed(env: Env) -> None:
    other_org = "org-elsewhere-" + env.org_id[-6:]
    async with env.db.transaction() as conn:
        await identity.create_organization(conn, other_org, "Elsewhere", settings=env.settings)
    async with env.db.transaction() as conn:
        ctx = identity._ctx(conn, env.settings, other_org)
        stored = (
            await ix.create(ctx, "Patient", {"resourceType": "Patient", "name": [{"family": "E"}]})
        ).stored
        assert stored is not None
        elsewhere = await identity.create_account(
            conn, other_org, env.email("elsewhere"), "patient", PASSWORD, patient_id=stored.res_id,
            settings=env.settings,
        )  # fmt: skip
        await notify.save_preferences(conn, elsewhere.id, notify.Preferences(sms=True, phone="+15550100188"))
        await send(conn, other_org, elsewhere.id, Kind.NEW_MESSAGE, "/messages/m9")
    await work(env.db)
    async with env.db.reader() as conn:
        assert await notify.recent_deliveries(conn, other_org, channel="sms") != []

    admin, _a, _s = await env.staff_session("org_admin")
    page = (await admin.get("/admin/outbox")).text
    assert "•••0188" not in page and "Nothing yet." in page
