"""What the visit stories share: the clinic they run in, written straight into the database, a
browser context signed in as sign-in would leave it, and the visit's Encounter read back."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.identity import service as identity
from housecall.identity import sessions
from housecall.scheduling import model
from housecall.visits import service
from housecall.web.records import Records
from tests.identity.conftest import PASSWORD, settings_for_tests
from tests.visits.conftest import license_

# docs/VIDEO.md: the flags that work on a loopback-only host (without the last one Chromium gathers
# no candidates at all).
CHROMIUM_ARGS = [
    "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-gpu", "--allow-loopback-in-peer-connection",
]  # fmt: skip


async def visit_clinic(
    database_url: str, smtp_port: int, *, mode: str = model.VIDEO, ended: bool = False
) -> dict[str, str]:
    """An organization with a patient, a clinician licensed in Vermont on her care team, a visit
    booked as ``mode`` starting now, and a signed-in session for each. ``ended``: the visit (a
    "Sick visit", its clinician in a pool) took place half an hour ago - checked in from Vermont,
    admitted and hung up through the service layer - and ``encounter`` names its Encounter."""
    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    org = "e2e-" + secrets.token_hex(4)
    out: dict[str, str] = {"org": org}
    try:
        async with db.transaction() as conn:
            await identity.create_organization(conn, org, "E2E Health", settings=settings)
            ctx = ix.Ctx(conn, settings, "https://testserver/fhir", Access.system(org))

            async def make(resource: dict[str, Any]) -> str:
                stored = (await ix.create(ctx, resource["resourceType"], resource)).stored
                assert stored is not None
                return str(stored.res_id)

            patient = await make({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Reyes"}]})
            doctor = await make({"resourceType": "Practitioner", "name": [{"given": ["Maya"], "family": "Carter"}],
                                 "qualification": [license_("VT")]})  # fmt: skip
            await make({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
                        "participant": [{"member": {"reference": f"Practitioner/{doctor}"}}]})  # fmt: skip
            start = service.now_dt() - dt.timedelta(minutes=30 if ended else 0)
            appointment: dict[str, Any] = {
                "resourceType": "Appointment", "status": "booked", "appointmentType": model.mode_concept(mode),
                "start": service.iso(start), "end": service.iso(start + dt.timedelta(minutes=20)), "minutesDuration": 20,
                "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
                                {"actor": {"reference": f"Practitioner/{doctor}"}, "status": "accepted"}],
            }  # fmt: skip
            if ended:
                pool = await make(
                    {"resourceType": "HealthcareService", "active": True, "name": "Primary care"}
                )
                await make({"resourceType": "PractitionerRole", "active": True,
                            "practitioner": {"reference": f"Practitioner/{doctor}"},
                            "healthcareService": [{"reference": f"HealthcareService/{pool}"}]})  # fmt: skip
                appointment["serviceType"] = [{"text": "Sick visit"}]
            out["appointment"] = await make(appointment)
            if ended:  # check-in, admission, hang-up, as the pages and the socket do them
                rec = Records(ctx)
                visit = await service.load_visit(rec, out["appointment"])
                assert visit is not None
                await service.check_in(rec, visit, state="VT", phone="802-555-0100")
                await service.admit(rec, visit, by=f"Practitioner/{doctor}")
                await service.end_visit(rec, visit)
                out["encounter"] = str((visit.encounter or {})["id"])
            for who, role, kw in (("patient", "patient", {"patient_id": patient}),
                                  ("clinician", "clinician", {"practitioner_id": doctor})):  # fmt: skip
                account = await identity.create_account(conn, org, f"{who}@{org}.example.org", role, PASSWORD,
                                                        settings=settings, **kw)  # fmt: skip
                out[who] = await sessions.start_session(conn, account, sessions.FULL)
    finally:
        await db.close()
    return out


async def signed_in(browser: Browser, raw: str, **context: Any) -> tuple[BrowserContext, Page]:
    """A new context holding the session cookie as sign-in sets it (host-only, Secure, which
    Chromium honours on 127.0.0.1); ``context`` goes to ``new_context`` (a phone's viewport, the
    camera and microphone allowed, unless given)."""
    options: dict[str, Any] = {
        "viewport": {"width": 375, "height": 740},
        "permissions": ["camera", "microphone"],
    }
    ctx = await browser.new_context(**{**options, **context})
    await ctx.add_cookies([{"name": sessions.SESSION_COOKIE, "value": raw, "domain": "127.0.0.1", "path": "/",
                            "secure": True, "httpOnly": True, "sameSite": "Lax"}])  # fmt: skip
    return ctx, await ctx.new_page()


async def encounter_of(
    database_url: str, smtp_port: int, setup: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The visit's Encounter and its Communications (chat lines, files), read as the system."""
    db = open_database(database_url)
    await db.connect()
    try:
        async with db.reader() as conn:
            ctx = ix.Ctx(conn, settings_for_tests(database_url, smtp_port), "https://testserver/fhir",
                         Access.system(setup["org"]))  # fmt: skip
            found = await ix.search(
                ctx,
                ix.search_request(ctx, "Encounter", [("appointment", f"Appointment/{setup['appointment']}")]),
            )
            encounter = found.matches[0].resource()
            chat = await ix.search(
                ctx, ix.search_request(ctx, "Communication", [("encounter", f"Encounter/{encounter['id']}")])
            )
    finally:
        await db.close()
    return encounter, [m.resource() for m in chat.matches]
