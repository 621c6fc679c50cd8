"""A patient sees who else looked at their record ("who looked at my record", from the audit trail):
a clinician by name, an app as an app, refused attempts too, and not their own reads."""

from __future__ import annotations

import httpx

from housecall.fhir import interactions as ix
from housecall.identity import service
from tests.identity.conftest import Env
from tests.support import provision_backend, token_request


async def test_a_patient_sees_who_looked_at_their_record(env: Env) -> None:
    patient_browser, patient = await env.patient_session()
    assert patient.patient_id is not None
    async with env.db.transaction() as conn:
        ctx = service._ctx(conn, env.settings, env.org_id)
        doc = await ix.create(
            ctx,
            "Practitioner",
            {"resourceType": "Practitioner", "name": [{"family": "Okafor", "given": ["Ada"]}]},
        )
        assert doc.stored is not None
        await ix.create(ctx, "CareTeam", {
            "resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient.patient_id}"},
            "participant": [{"member": {"reference": f"Practitioner/{doc.stored.res_id}"}}],
        })  # fmt: skip
    clinician_browser, _, _ = await env.staff_session("clinician", practitioner_id=doc.stored.res_id)
    assert (await clinician_browser.get(f"/fhir/Patient/{patient.patient_id}")).status_code == 200
    # The patient's own reads are not listed.
    assert (await patient_browser.get(f"/fhir/Patient/{patient.patient_id}")).status_code == 200
    # An app of the organization reads it too, and a stranger's attempt is refused.
    client_id, secret = await provision_backend(env.settings.database_url, env.org_id)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app), base_url="https://testserver"
    ) as app:
        token = (await app.post("/oauth/token", **token_request(client_id, secret))).json()["access_token"]  # type: ignore[arg-type]
        assert (
            await app.get(f"/fhir/Patient/{patient.patient_id}", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 200
    stranger, _, _ = await env.staff_session("clinician")
    assert (await stranger.get(f"/fhir/Patient/{patient.patient_id}")).status_code == 404
    await env.app.state.audit_sink.close()

    assert 'href="/account/record-access"' in (await patient_browser.get("/account")).text
    page = await patient_browser.get("/account/record-access")
    assert page.status_code == 200
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0]
    assert rows.count("<tr>") == 3, rows
    assert "Ada Okafor" in rows and "A connected app or service" in rows
    assert rows.count("refused") == 1 and rows.count("allowed") == 2
    # Staff have no record of their own to look at here.
    assert (await clinician_browser.get("/account/record-access")).status_code == 404
