"""The portal's home page, its language switch, and where each person lands."""

from __future__ import annotations

from tests.clinic import Clinic, text_of


async def test_each_person_lands_on_their_start_page(clinic: Clinic) -> None:
    for who, start in (
        ("patient", "/portal"),
        ("clinician", "/workspace"),
        ("nurse", "/workspace"),
        ("desk", "/account"),
    ):
        r = await clinic.browsers[who].get("/")
        assert r.status_code == 303 and r.headers["location"] == start, who
    anonymous = clinic.env.client()
    assert (await anonymous.get("/")).headers["location"] == "/signin"


async def test_home_greets_the_patient_and_switches_language(clinic: Clinic) -> None:
    page = await clinic.browsers["patient"].get("/portal")
    assert page.status_code == 200 and "Hello, Ana Reyes" in text_of(page.text)
    assert '<html lang="en">' in page.text
    r = await clinic.form_post("patient", "/language", {"lang": "es", "next": "/portal"}, form_from="/portal")
    assert r.status_code == 303 and r.headers["location"] == "/portal"
    page = await clinic.browsers["patient"].get("/portal")
    assert '<html lang="es">' in page.text


async def test_a_proxy_chooses_whose_record_and_switches(clinic: Clinic) -> None:
    env = clinic.env
    from housecall.identity import service

    second = await clinic.create({"resourceType": "Patient", "name": [{"given": ["Leo"], "family": "Reyes"}]})
    proxy = await env.account("proxy")
    async with env.db.transaction() as conn:
        for pid in (clinic.patient, second["id"]):
            await service.grant_proxy(
                conn, proxy.id, pid, granted_by="system:test", relationship="parent", settings=env.settings
            )
    browser = env.client()
    await env.signin(browser, proxy.email, next="/portal")
    clinic.browsers["proxy"] = browser
    r = await browser.get("/portal")
    assert r.status_code == 303 and r.headers["location"] == "/portal/choose"
    choose = text_of((await browser.get("/portal/choose")).text)
    assert "Ana Reyes" in choose and "Leo Reyes" in choose
    for pid, name in ((clinic.patient, "Ana Reyes"), (second["id"], "Leo Reyes")):
        r = await clinic.form_post(
            "proxy", "/account/acting-for", {"patient": pid, "next": "/portal"}, form_from="/portal/choose"
        )
        assert r.status_code == 303 and r.headers["location"] == "/portal"
        assert f"{name}'s home" in text_of((await browser.get("/portal")).text)
