"""The organization admin's accounts page, and proxies acting for patients who granted it."""

from __future__ import annotations

import re

from housecall.access.actor import ActorKind
from housecall.identity import service, sessions
from tests.identity.conftest import Env
from tests.identity.test_sessions import fake_request


async def test_org_admin_lists_invites_disables_and_resets_mfa(env: Env) -> None:
    admin, admin_account, _ = await env.staff_session("org_admin")
    nurse_client, nurse, _ = await env.staff_session("nurse")
    page = await admin.get("/admin/accounts")
    assert page.status_code == 200 and nurse.email in page.text and admin_account.email in page.text
    email = env.email("invitee")
    r = await env.post(
        admin,
        "/admin/accounts",
        {"email": email, "role": "front_desk", "display_name": "Fran"},
        form_from="/admin/accounts",
    )
    assert r.status_code == 303
    assert "Set up your Housecall account" in env.mail.wait_for(email)[0]["Subject"]
    dup = await env.post(
        admin, "/admin/accounts", {"email": email, "role": "front_desk"}, form_from="/admin/accounts"
    )
    assert dup.status_code == 400 and 'aria-invalid="true"' in dup.text and 'href="#email"' in dup.text
    r = await env.post(admin, f"/admin/accounts/{nurse.id}/reset-mfa", {}, form_from="/admin/accounts")
    assert r.status_code == 303
    assert (await nurse_client.get("/account")).status_code == 303  # sessions ended
    r = await env.post(admin, f"/admin/accounts/{nurse.id}/disable", {}, form_from="/admin/accounts")
    assert r.status_code == 303
    assert (await env.signin(env.client(), nurse.email)).status_code == 400
    r = await env.post(admin, f"/admin/accounts/{nurse.id}/enable", {}, form_from="/admin/accounts")
    assert r.status_code == 303
    assert (await env.signin(env.client(), nurse.email)).headers["location"].startswith("/mfa/enrol")


async def test_accounts_page_is_for_org_admins_of_the_same_organization_only(env: Env) -> None:
    patient, _ = await env.patient_session()
    nurse, _, _ = await env.staff_session("nurse")
    for c in (patient, nurse):
        assert (await c.get("/admin/accounts")).status_code == 404
        r = await env.post(
            c, "/admin/accounts", {"email": env.email(), "role": "org_admin"}, form_from="/account"
        )
        assert r.status_code == 404
    # An admin of another organization cannot touch this one's accounts.
    target = await env.account("patient")
    async with env.db.transaction() as conn:
        await service.create_organization(conn, env.org_id + "-b", "Other", settings=env.settings)
        other_admin = await service.create_account(
            conn,
            env.org_id + "-b",
            env.email("oadmin"),
            "org_admin",
            "another long passphrase",
            settings=env.settings,
        )
    c = env.client()
    await env.signin(c, other_admin.email, "another long passphrase")
    await env.enrol(c, other_admin)
    page = await c.get("/admin/accounts")
    assert target.email not in page.text
    r = await env.post(c, f"/admin/accounts/{target.id}/disable", {}, form_from="/admin/accounts")
    assert r.status_code == 404
    async with env.db.reader() as conn:
        refreshed = await service.get_account(conn, target.id)
    assert refreshed is not None and not refreshed.disabled


async def test_proxy_acts_only_for_patients_with_an_active_grant(env: Env) -> None:
    child = await env.patient()
    other = await env.patient()
    parent = await env.account("proxy", email=env.email("parent"))
    async with env.db.transaction() as conn:
        grant = await service.grant_proxy(
            conn, parent.id, child, granted_by="system:test", relationship="parent"
        )
    assert grant.related_person_id
    c = env.client()
    await env.signin(c, parent.email)
    actor = await sessions.actor_for_request(fake_request(env, c))
    assert actor is not None and actor.kind is ActorKind.PROXY and actor.patient_id is None
    page = await c.get("/account")
    assert f"Patient/{child}" in page.text and f"Patient/{other}" not in page.text
    refused = await env.post(c, "/account/acting-for", {"patient": other}, form_from="/account")
    assert refused.status_code == 404
    ok = await env.post(c, "/account/acting-for", {"patient": child}, form_from="/account")
    assert ok.status_code == 303
    actor = await sessions.actor_for_request(fake_request(env, c))
    assert actor is not None and actor.patient_id == child
    assert actor.fhir_user == f"RelatedPerson/{grant.related_person_id}"
    async with env.db.transaction() as conn:
        assert await service.revoke_proxy(conn, grant.id)
    actor = await sessions.actor_for_request(fake_request(env, c))
    assert actor is not None and actor.patient_id is None  # effective on the next request
    assert not re.search(f"Patient/{child}", (await c.get("/account")).text)


async def test_organizations_have_locations_in_several_states_and_practitioner_roles(env: Env) -> None:
    practitioner = await env.practitioner()
    async with env.db.transaction() as conn:
        ca = await service.add_location(
            conn, env.org_id, "Fresno clinic", "CA", city="Fresno", settings=env.settings
        )
        tx = await service.add_location(conn, env.org_id, "Austin clinic", "TX", settings=env.settings)
        role = await service.add_practitioner_role(
            conn, env.org_id, practitioner, specialty=("394814009", "General practice"),
            location_ids=[ca, tx], licensed_states=["CA", "TX"], settings=env.settings,
        )  # fmt: skip
        stored = await service._ctx(conn, env.settings, env.org_id).store.read("PractitionerRole", role)
    assert stored is not None
    resource = stored.resource()
    assert [loc["reference"] for loc in resource["location"]] == [f"Location/{ca}", f"Location/{tx}"]
    assert [e["valueCode"] for e in resource["extension"]] == ["CA", "TX"]
