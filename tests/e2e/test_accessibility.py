"""Every page in ``tests/e2e/pages.py``, opened in Debian's Chromium against a live ``housecall
serve`` by the person it is for, in English and in Spanish, at a phone size and a desktop size:

- axe-core (installed from npm by the build) finds no "serious" or "critical" violation;
- a full-page screenshot of each is saved under ``$HOUSECALL_SCREENSHOTS`` (default
  ``var/screenshots/``, not committed) for people to look at;
- the first load of each page (HTML, CSS and scripts, no images) weighs under 100 KB;
- no page breaks its Content Security Policy, and none scrolls sideways on a phone.

The pages keep their strict CSP: axe's source is run through the DevTools protocol
(``page.evaluate``), which the page's CSP does not govern, and the test checks that axe really ran
(it reports passed rules).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Response, async_playwright

from housecall.core.mail import Outbox
from housecall.identity import service, sessions
from housecall.identity.service import Account
from housecall.smart import clients, tokens
from housecall.visits import guests
from housecall.web import i18n
from housecall.workspace import inbox
from tests.clinic import Clinic
from tests.e2e.pages import FORMS, PAGES
from tests.support import REPO, LiveServer
from tests.visits.conftest import book
from tests.visits.ended import ended_visit
from tests.visits.test_modes import book_mode

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
APP_CALLBACK = "https://app.example.org/callback"
WEIGHT_LIMIT = 100 * 1024  # bytes of HTML, CSS and scripts on a page's first load
FAILING_IMPACTS = ("serious", "critical")
VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
    "desktop": {"viewport": {"width": 1366, "height": 900}},
}
LANGUAGES = ("en", "es")

RUN_AXE = """async () => {
  const r = await axe.run(document, {resultTypes: ['violations']});
  return {
    passes: r.passes.length,
    violations: r.violations.map(v => ({
      id: v.id, impact: v.impact, help: v.help,
      targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5),
    })),
  };
}"""


# The elements that stick out of the screen (a phone browser then zooms the whole page out), outside
# the boxes made to scroll sideways (wide tables).
WIDER_THAN_SCREEN = """(width) => {
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.parentElement?.closest('.table-wrap') || e.closest('.visually-hidden, .skip-link') || e.offsetParent === null) continue;
    const box = e.getBoundingClientRect();
    if (box.right > width + 1 || box.left < -1) {
      out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + String(e.className).split(' ')[0] : '')
               + ' ' + Math.round(box.left) + '-' + Math.round(box.right) + 'px');
    }
  }
  const doc = document.documentElement.scrollWidth;
  if (doc > width + 1) out.push('the document ' + doc + 'px');
  return out.slice(0, 6);
}"""


def screenshot_dir() -> Path:
    return Path(os.environ.get("HOUSECALL_SCREENSHOTS") or REPO / "var" / "screenshots")


@dataclass
class World:
    """Who signs in for each role (account, session stage, patient acted for) and the values the
    page paths name. Sessions are started when a role's pages are walked, so that the recent
    sign-in emergency access asks for is recent then."""

    people: dict[str, tuple[Account, str, str | None]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, tuple[str, str]] = field(default_factory=dict)  # a role's cookie other than a session


@dataclass
class Findings:
    violations: list[str] = field(default_factory=list)
    minor: list[str] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    screenshots: int = 0


async def start_session(clinic: Clinic, account: Account, stage: str, acting_for: str | None) -> str:
    """A session as sign-in makes it (the raw id for the cookie)."""
    async with clinic.env.db.transaction() as conn:
        raw = await sessions.start_session(conn, account, stage)
        if acting_for:
            await conn.execute(
                "UPDATE auth_session SET acting_for = $1 WHERE id_hash = $2", acting_for, service.sha256(raw)
            )
    return raw


async def build_world(clinic: Clinic, base: str) -> World:
    """The clinic of tests/clinic.py plus a proxy (a parent of the patient), an organization admin,
    a connected app, work in the inbox, an emergency access, and the e-mailed links."""
    setup, world = clinic.env, World()
    patient = clinic.accounts["patient"]
    proxy = await setup.account("proxy", display_name="Rosa Reyes")
    _admin_browser, admin, _secret = await setup.staff_session("org_admin", display_name="Olga Admin")
    clinician = clinic.accounts["clinician"]
    outbox = Outbox()
    async with setup.db.transaction() as conn:
        await service.grant_proxy(
            conn, proxy.id, clinic.patient, granted_by=patient.id, relationship="parent"
        )
        app, _none = await clients.create_client(
            conn, name="Blood Pressure Diary", grant="authorization_code", redirect_uris=[APP_CALLBACK],
            scopes=["openid", "fhirUser", "launch/patient", "offline_access", "patient/Observation.rs",
                    "patient/Patient.r"], now_us=tokens.now_us_clock(),
        )  # fmt: skip
        await clients.create_client(
            conn, name="Clinic scale gateway", grant="client_credentials", scopes=["system/Observation.c"],
            now_us=tokens.now_us_clock(), secret=True, org_id=setup.org_id,
        )  # fmt: skip
        invited = await service.create_account(
            conn, setup.org_id, setup.email("new"), "patient", None, patient_id=clinic.other_patient,
            outbox=outbox, settings=setup.settings,
        )  # fmt: skip
        world.values["reset_token"] = await service.send_link(conn, patient, "reset", outbox, setup.settings)
        world.values["verify_token"] = await service.send_link(
            conn, invited, "verify", outbox, setup.settings
        )
    for kind, description in (("message", "Question about a rash"), ("refill", "Lisinopril 10 mg")):
        await clinic.create({
            "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
            "code": {"coding": [{"system": inbox.WORK_SYSTEM, "code": kind}]},
            "description": description, "for": {"reference": f"Patient/{clinic.patient}"},
            "focus": {"reference": f"Patient/{clinic.patient}"}, "authoredOn": "2026-01-01T09:00:00Z",
            "performerType": [{"coding": [{"system": inbox.POOL_SYSTEM, "code": clinic.pool}]}],
        })  # fmt: skip
    # The clinician looks at the patient's record (a row on the patient's record-access page) and
    # opens another patient's record in an emergency (the status page).
    seen = await clinic.browsers["clinician"].get(f"/fhir/Patient/{clinic.patient}")
    assert seen.status_code == 200, seen.text[:300]
    opened = await clinic.form_post(
        "clinician", "/break-glass",
        {"patient": clinic.other_patient, "reason": "Unconscious in the waiting room, needs allergies", "minutes": "30"},
        form_from="/break-glass",
    )  # fmt: skip
    assert opened.status_code == 303, opened.text[:500]
    world.values["opening"] = opened.headers["location"].rsplit("/", 1)[1]
    world.values["consent"] = "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": app.client_id, "redirect_uri": APP_CALLBACK,
        "scope": "openid fhirUser launch/patient offline_access patient/Observation.rs patient/Patient.r",
        "state": secrets.token_urlsafe(8), "aud": f"{base}/fhir", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    })  # fmt: skip

    # A booked video visit, and its guests: one who gave a name (the waiting room), one who has not.
    world.values["visit"] = await book(clinic)
    world.values["other_visit"] = await book(clinic)
    # A chat-only and a phone-only visit (decision 0025): their check-in and call pages.
    world.values["visit_chat"] = await book_mode(clinic, "chat")
    world.values["visit_phone"] = await book_mode(clinic, "phone")
    async with setup.db.transaction() as conn:
        for role, name in (("guest", "Rosa Díaz"), ("new-guest", None)):
            link = await guests.make_link(conn, org_id=setup.org_id, appointment_id=world.values["visit"],
                                          label="Interpreter", account_id=clinician.id)  # fmt: skip
            _visit, secret = await guests.open_link(conn, link, None)
            assert secret
            if name:
                await guests.set_name(conn, secret, name)
            world.cookies[role] = (guests.COOKIE, secret)
    # After a video visit (decision 0019): one written up and signed, one still to write.
    world.values["visit_written"], _encounter = await ended_visit(clinic, minutes_ago=90)
    world.values["visit_ended"], _encounter = await ended_visit(clinic)
    summary = f"/visits/{world.values['visit_written']}/summary"
    signed = await clinic.form_post(
        "clinician", summary,
        {"action": "sign", "diagnoses": "J02.9", "instructions": "Rest and drink fluids.", "follow_up_weeks": "2"},
        form_from=summary,
    )  # fmt: skip
    assert signed.status_code == 303, signed.text[:500]

    world.people["patient"] = (patient, sessions.FULL, None)
    world.people["proxy"] = (proxy, sessions.FULL, clinic.patient)
    world.people["clinician"] = (clinician, sessions.FULL, None)
    world.people["nurse"] = (clinic.accounts["nurse"], sessions.FULL, None)
    world.people["desk"] = (clinic.accounts["desk"], sessions.FULL, None)
    world.people["admin"] = (admin, sessions.FULL, None)
    world.people["second-step"] = (clinician, sessions.MFA, None)
    return world


def page_path(template: str, world: World) -> str:
    return template.format(**world.values)


def slug(path: str) -> str:
    name = urlsplit(path).path.strip("/").replace("/", "_") or "root"
    return re.sub(r"[^a-z0-9_-]", "", name.lower()) or "page"


async def new_context(
    browser: Browser,
    base: str,
    viewport: str,
    lang: str,
    raw: str | None,
    other: tuple[str, str] | None = None,
) -> BrowserContext:
    context = await browser.new_context(**VIEWPORTS[viewport])
    cookies: list[Any] = [{"name": i18n.COOKIE, "value": lang, "url": base + "/"}]
    for name, value in ([(sessions.SESSION_COOKIE, raw)] if raw is not None else []) + (
        [other] if other else []
    ):
        # Secure, as the server sets it (Chromium sends it to 127.0.0.1 over http; the DevTools
        # protocol only takes it with an https address - cookies do not depend on the scheme).
        cookies.append({"name": name, "value": value, "secure": True, "httpOnly": True,
                        "url": base.replace("http://", "https://") + "/", "sameSite": "Lax"})  # fmt: skip
    await context.add_cookies(cookies)
    return context


async def first_load_weight(page: Page, url: str) -> tuple[Response | None, int]:
    """Load ``url`` with the browser cache off; the bytes of the document, styles and scripts."""
    bodies: list[Any] = []

    def on_response(response: Response) -> None:
        if response.request.resource_type in ("document", "stylesheet", "script", "xhr", "fetch"):
            bodies.append(response)

    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    page.on("response", on_response)
    answer = await page.goto(url, wait_until="load")
    page.remove_listener("response", on_response)
    total = 0
    for response in bodies:
        total += len(await response.body())
    return answer, total


async def arrived(page: Page, answer: Response | None, path: str, status: int, lang: str) -> str | None:
    """What is wrong with where ``page`` landed: another status, a redirect, the wrong language."""
    if answer is None or answer.status != status:
        return f"HTTP {answer.status if answer else '-'} instead of {status}"
    landed = urlsplit(page.url).path
    if landed != urlsplit(path).path:
        return f"landed on {landed}"
    if await page.get_attribute("html", "lang") != lang:
        return f"<html lang> is not {lang}"
    return None


async def check_page(page: Page, axe_source: str, where: str, findings: Findings) -> None:
    await page.evaluate(axe_source)
    result = await page.evaluate(RUN_AXE)
    if result["passes"] == 0:
        findings.problems.append(f"{where}: axe did not run (no rule passed)")
    for v in result["violations"]:
        line = f"{v['impact']:>8} {v['id']} on {where}: {v['help']} -> {'; '.join(v['targets'])}"
        (findings.violations if v["impact"] in FAILING_IMPACTS else findings.minor).append(line)
    wider: list[str] = await page.evaluate(
        WIDER_THAN_SCREEN, page.viewport_size["width"] if page.viewport_size else 0
    )
    if wider:
        findings.problems.append(f"{where}: wider than the screen: {', '.join(wider)}")


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        await browser.close()


# Every page, twice per language and size: several minutes on a shared two-core machine. The pages'
# markup does not depend on the database engine (the stories in tests/e2e run on both), so this
# runs on PostgreSQL only: on SQLite as well it was a quarter of the suite's time.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
async def test_every_page_is_accessible_light_and_photographed_in_english_and_spanish(
    clinic: Clinic,
    chromium: Browser,
) -> None:
    assert AXE.exists(), "axe-core is installed by `make install` (npm ci)"
    axe_source = AXE.read_text()
    server = LiveServer(clinic.env.settings.database_url, extra_env={
        "HOUSECALL_ARGON2_TIME_COST": "1", "HOUSECALL_ARGON2_MEMORY_KIB": "1024", "HOUSECALL_ARGON2_PARALLELISM": "1",
    })  # fmt: skip
    world = await build_world(clinic, server.base)
    await asyncio.to_thread(server.start)
    out = screenshot_dir()
    out.mkdir(parents=True, exist_ok=True)
    findings = Findings()

    async def look(page: Page, where: str, name: str) -> None:
        await check_page(page, axe_source, where, findings)
        await page.screenshot(path=str(out / name), full_page=True)
        findings.screenshots += 1

    try:
        for role, entries in PAGES.items():
            raw = None if role not in world.people else await start_session(clinic, *world.people[role])
            for viewport in VIEWPORTS:
                for lang in LANGUAGES:
                    context = await new_context(
                        chromium, server.base, viewport, lang, raw, world.cookies.get(role)
                    )
                    page = await context.new_page()
                    csp_errors: list[str] = []
                    page.on("console", lambda m, errs=csp_errors: errs.append(m.text)
                            if "Content Security Policy" in m.text else None)  # fmt: skip
                    for entry in entries:
                        template, status = entry if isinstance(entry, tuple) else (entry, 200)
                        path = page_path(template, world)
                        where = f"{path.split('?')[0]} ({role}, {lang}, {viewport})"
                        name = (
                            f"{slug(path)}{'' if status == 200 else f'-{status}'}--{role}--{lang}--{viewport}"
                        )
                        answer, weight = await first_load_weight(page, server.base + path)
                        problem = await arrived(page, answer, path, status, lang)
                        if problem:
                            findings.problems.append(f"{where}: {problem}")
                            continue
                        key = f"{path.split('?')[0]} ({role})"
                        findings.weights[key] = max(findings.weights.get(key, 0), weight)
                        await look(page, where, name + ".png")
                        if template in FORMS.get(role, ()):
                            # The same form sent empty: the error summary and the marked fields.
                            async with page.expect_navigation():
                                await page.locator("main form[novalidate] [type=submit]").first.click()
                            if not await page.locator(".error-summary").count():
                                findings.problems.append(f"{where}: no error summary for an empty form")
                            await look(page, where + " with errors", name + "--errors.png")
                    findings.problems += [f"{role} ({lang}, {viewport}): {e}" for e in csp_errors]
                    await context.close()
    finally:
        await asyncio.to_thread(server.stop)

    heaviest = sorted(findings.weights.items(), key=lambda kv: -kv[1])
    print(f"\n{findings.screenshots} screenshots in {out}")
    print("heaviest first loads: " + ", ".join(f"{k} {v / 1024:.1f} KB" for k, v in heaviest[:5]))
    for line in findings.minor:
        print("axe (moderate/minor):", line)
    for line in findings.violations:
        print("axe:", line)
    too_heavy = [f"{k}: {v / 1024:.1f} KB" for k, v in heaviest if v >= WEIGHT_LIMIT]
    expected = sum(len(t) for t in PAGES.values()) + sum(len(f) for f in FORMS.values())
    assert not findings.problems, "\n".join(findings.problems)
    assert findings.screenshots == expected * len(VIEWPORTS) * len(LANGUAGES)
    assert not findings.violations, "\n".join(findings.violations)
    assert not too_heavy, too_heavy
    assert heaviest and heaviest[0][1] > 1000  # the weighing saw the pages
