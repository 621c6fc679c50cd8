"""Break-glass (SECURITY.md row 8): a clinician without a care relationship opens a record only
after giving a reason and proving who they are again; it is time-boxed, its start and end are in
the audit trail, and the patient and the privacy officer are told (with no health information)."""

from __future__ import annotations

from housecall.access import breakglass
from housecall.audit.trail import who_viewed
from housecall.fhir import interactions as ix
from housecall.identity import service
from housecall.identity.clock import clock
from tests.identity.conftest import PASSWORD, Env, settle, totp_at

REASON = "Unconscious in the emergency room; needs the allergy list now"


async def _observation(env: Env, patient_id: str) -> str:
    async with env.db.transaction() as conn:
        out = await ix.create(service._ctx(conn, env.settings, env.org_id), "Observation", {
            "resourceType": "Observation", "status": "final", "code": {"text": "peanut allergy test"},
            "subject": {"reference": f"Patient/{patient_id}"},
        })  # fmt: skip
    assert out.stored is not None
    return out.stored.res_id


async def test_break_glass_from_refusal_to_the_end_of_the_window(env: Env) -> None:
    patient = await env.account("patient")
    assert patient.patient_id is not None
    privacy = await env.account("privacy_officer")
    obs = await _observation(env, patient.patient_id)
    browser, _clinician, secret = await env.staff_session("clinician")

    # No care relationship: the record looks like it does not exist.
    assert (await browser.get(f"/fhir/Observation/{obs}")).status_code == 404

    # Opening it needs a fresh proof of identity.
    clock.advance(301)
    r = await browser.get(f"/break-glass?patient={patient.patient_id}")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin/confirm?next=/break-glass")
    r = await env.post(browser, "/signin/confirm", {"password": PASSWORD, "code": totp_at(secret),
                       "next": "/break-glass"}, form_from="/signin/confirm?next=/break-glass")  # fmt: skip
    assert r.status_code == 303, r.text[:300]

    # A reason is required: the field is highlighted.
    r = await env.post(
        browser, "/break-glass", {"patient": patient.patient_id, "reason": "now", "minutes": "15"}
    )
    assert (
        r.status_code == 400 and 'id="reason" name="reason" rows="4" required aria-invalid="true"' in r.text
    )
    assert (await browser.get(f"/fhir/Observation/{obs}")).status_code == 404

    r = await env.post(
        browser, "/break-glass", {"patient": patient.patient_id, "reason": REASON, "minutes": "15"}
    )
    assert r.status_code == 303
    status_page = await browser.get(r.headers["location"])
    assert "Open for 15 more minutes" in status_page.text

    # Open: the record reads, and each read is on the record.
    assert (await browser.get(f"/fhir/Observation/{obs}")).status_code == 200

    # The patient and the privacy officer were told, without health information.
    for address in (patient.email, privacy.email):
        mail = env.mail.wait_for(address)[-1]
        body = mail.get_payload(decode=True).decode()
        assert "emergency" in body
        assert REASON not in body and "peanut" not in body and patient.patient_id not in body

    # Time is up after 15 minutes: refused again, and the end is recorded.
    clock.advance(15 * 60 + 1)
    assert (await browser.get(f"/fhir/Observation/{obs}")).status_code == 404
    async with env.db.transaction() as conn:
        assert await breakglass.close_expired(conn, clock.now_us()) == 1
    await settle()
    async with env.db.reader() as conn:
        seen = await who_viewed(conn, env.org_id, patient.patient_id)
    operations = [a.interaction for a in seen]
    reads = [a for a in seen if a.interaction == "read" and f"Observation/{obs}/_history/1" in a.what]
    assert len(reads) == 1 and reads[0].outcome == "0"
    denied = [a for a in seen if a.interaction == "read" and a.outcome == "4"]
    assert len(denied) >= 3, operations  # the refusals are on the record too
    starts = await _events(env, patient.patient_id, "break-glass-start")
    ends = await _events(env, patient.patient_id, "break-glass-end")
    assert (starts, ends) == (1, 1)


async def test_ending_early_closes_the_record_at_once(env: Env) -> None:
    patient = await env.account("patient")
    assert patient.patient_id is not None
    obs = await _observation(env, patient.patient_id)
    browser, _, _ = await env.staff_session("nurse")
    r = await env.post(
        browser, "/break-glass", {"patient": patient.patient_id, "reason": REASON, "minutes": "60"}
    )
    assert r.status_code == 303
    opening = r.headers["location"]
    assert (await browser.get(f"/fhir/Observation/{obs}")).status_code == 200
    r = await env.post(browser, f"{opening}/end", {}, form_from=opening)
    assert r.status_code == 303
    assert (await browser.get(f"/fhir/Observation/{obs}")).status_code == 404
    assert await _events(env, patient.patient_id, "break-glass-end") == 1


async def test_only_clinicians_and_nurses_may_break_glass(env: Env) -> None:
    patient = await env.account("patient")
    browser, _, _ = await env.staff_session("front_desk")
    assert (await browser.get("/break-glass")).status_code == 403
    token = await env.csrf(browser, "/account")
    form = {"patient": patient.patient_id or "", "reason": REASON, "minutes": "5", "csrf": token}
    assert (await browser.post("/break-glass", data=form)).status_code == 403
    async with env.db.reader() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM break_glass WHERE patient_id = $1", patient.patient_id)
            == 0
        )


async def _events(env: Env, patient_id: str, operation: str) -> int:
    async with env.db.reader() as conn:
        rows = await conn.fetch("SELECT event FROM audit_log WHERE patient_id = $1", patient_id)
    return sum(1 for (event,) in rows if operation.encode() in bytes(event))
