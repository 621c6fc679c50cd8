"""SMART tokens at the FHIR API: the scopes and the patient in context decide, and a revoked token
is refused on the very next request (SECURITY.md rows 17 and 18, end to end through /fhir)."""

from __future__ import annotations

import httpx

from housecall.smart import clients, tokens
from tests.identity.conftest import Env, env, smtp  # noqa: F401 - fixtures
from tests.smart.conftest import REDIRECT, auth_params, consent_form, pkce, query_of

FHIR = "https://testserver/fhir"


async def _patient_token(e: Env, scope: str) -> tuple[httpx.AsyncClient, str, str, str]:
    """(browser, client id, patient id, access token) of a patient's standalone launch."""
    account = await e.account("patient")
    async with e.db.transaction() as conn:
        app, _ = await clients.create_client(
            conn, name="Vitals", grant="authorization_code", redirect_uris=[REDIRECT],
            scopes=["launch/patient", "patient/*.cruds"], now_us=tokens.now_us_clock(),
        )  # fmt: skip
    browser = e.client()
    await e.signin(browser, account.email)
    verifier, challenge = pkce()
    page = await browser.get(
        "/oauth/authorize", params=auth_params(app.client_id, challenge, aud=FHIR, scope=scope)
    )
    answer = await browser.post("/oauth/authorize", data={**consent_form(page.text), "decision": "approve"})
    code = query_of(answer.headers["location"])["code"]
    body = (await browser.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id,
        "code_verifier": verifier,
    })).json()  # fmt: skip
    assert account.patient_id is not None
    return browser, app.client_id, account.patient_id, body["access_token"]


async def test_a_patient_token_reads_its_own_record_only_and_dies_when_revoked(env: Env) -> None:  # noqa: F811
    other = await env.patient()
    _browser, client_id, patient_id, token = await _patient_token(env, "launch/patient patient/Patient.r")
    api = env.client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await api.get(f"/fhir/Patient/{patient_id}", headers=bearer)).status_code == 200
    assert (await api.get(f"/fhir/Patient/{other}", headers=bearer)).status_code == 404
    write = await api.post("/fhir/Observation", headers=bearer, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{patient_id}"},
    })  # fmt: skip
    assert write.status_code in (403, 404)
    assert (await api.post("/oauth/revoke", data={"token": token, "client_id": client_id})).status_code == 200
    gone = await api.get(f"/fhir/Patient/{patient_id}", headers=bearer)
    assert gone.status_code == 401
    assert gone.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_forged_or_foreign_bearer_is_401(env: Env) -> None:  # noqa: F811
    api = env.client()
    for value in ("hca_" + "A" * 43, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "x"):
        answer = await api.get("/fhir/Patient", headers={"Authorization": f"Bearer {value}"})
        assert answer.status_code == 401, value


async def test_a_backend_token_reads_its_own_organization_only(env: Env) -> None:  # noqa: F811
    from housecall.fhir import interactions as ix
    from housecall.identity import service
    from tests.smart.test_backend import JWKS, claims, sign

    ours = await env.patient()
    other_org = "org-other-" + env.org_id[-6:]
    async with env.db.transaction() as conn:
        await service.create_organization(conn, other_org, "Elsewhere", settings=env.settings)
        created = await ix.create(
            service._ctx(conn, env.settings, other_org), "Patient", {"resourceType": "Patient"}
        )
        assert created.stored is not None
        theirs = created.stored.res_id
        backend, _ = await clients.create_client(
            conn, name="Registry", grant="client_credentials", scopes=["system/Patient.rs"], jwks=JWKS,
            org_id=env.org_id, now_us=tokens.now_us_clock(),
        )  # fmt: skip
    api = env.client()
    assertion = sign(claims(backend.client_id, aud="https://testserver/oauth/token"))
    answer = await api.post("/oauth/token", data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion": assertion,
    })  # fmt: skip
    assert answer.status_code == 200, answer.text
    bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    assert (await api.get(f"/fhir/Patient/{ours}", headers=bearer)).status_code == 200
    assert (await api.get(f"/fhir/Patient/{theirs}", headers=bearer)).status_code == 404
    found = (await api.get("/fhir/Patient", headers=bearer, params={"_count": "1000"})).json()
    ids = {e["resource"]["id"] for e in found.get("entry", [])}
    assert ours in ids and theirs not in ids
    write = await api.post("/fhir/Patient", headers=bearer, json={"resourceType": "Patient"})
    assert write.status_code in (403, 404)  # read and search only
