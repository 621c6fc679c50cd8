"""Launches by people signed in through identity's real sessions (no stand-in): a proxy's patient
picker lists exactly the patients who granted them access, the chosen patient is checked on the
server, and a revoked proxy permission or a disabled account ends the app's access on the next
request."""

from __future__ import annotations

import re

from housecall.access.actor import ActorKind
from housecall.identity import service
from housecall.smart import clients, tokens
from tests.identity.conftest import Env, env, smtp  # noqa: F401 - fixtures
from tests.smart.conftest import REDIRECT, auth_params, consent_form, pkce, query_of

FHIR = "https://testserver/fhir"


async def _app(e: Env) -> clients.Client:
    async with e.db.transaction() as conn:
        client, _ = await clients.create_client(
            conn, name="Family Health", grant="authorization_code", redirect_uris=[REDIRECT],
            scopes=["openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs"],
            now_us=tokens.now_us_clock(),
        )  # fmt: skip
    return client


async def _actor(e: Env, access_token: str):
    async with e.db.reader() as conn:
        return await tokens.lookup_actor(conn, access_token, tokens.now_us_clock())


async def test_a_proxy_picks_among_the_patients_who_granted_access(env: Env) -> None:  # noqa: F811
    child = await env.patient()
    stranger = await env.patient()
    parent = await env.account("proxy", email=env.email("parent"))
    async with env.db.transaction() as conn:
        grant = await service.grant_proxy(
            conn, parent.id, child, granted_by="system:test", relationship="parent"
        )
    app = await _app(env)
    browser = env.client()
    await env.signin(browser, parent.email)
    verifier, challenge = pkce()
    params = auth_params(
        app.client_id, challenge, aud=FHIR, scope="openid fhirUser launch/patient patient/*.rs"
    )
    page = await browser.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text[:300]
    offered = re.findall(r'name="patient" value="([^"]+)"', page.text)
    assert offered == [child] and stranger not in page.text
    form = consent_form(page.text)

    forged = await browser.post("/oauth/authorize", data={**form, "decision": "approve", "patient": stranger})
    assert forged.status_code == 403 and "location" not in forged.headers

    page = await browser.get("/oauth/authorize", params=params)
    answer = await browser.post("/oauth/authorize", data={**consent_form(page.text), "decision": "approve",
                                                          "patient": child})  # fmt: skip
    code = query_of(answer.headers["location"])["code"]
    token = await browser.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id,
        "code_verifier": verifier,
    })  # fmt: skip
    body = token.json()
    assert body["patient"] == child
    actor = await _actor(env, body["access_token"])
    assert actor is not None and actor.kind is ActorKind.PROXY and actor.patient_id == child
    assert actor.fhir_user == f"RelatedPerson/{grant.related_person_id}" and actor.account_id == parent.id

    async with env.db.transaction() as conn:
        assert await service.revoke_proxy(conn, grant.id)
    assert await _actor(env, body["access_token"]) is None  # effective on the next request


async def test_a_proxy_nobody_granted_access_gets_no_consent_page(env: Env) -> None:  # noqa: F811
    parent = await env.account("proxy", email=env.email("lonely"))
    app = await _app(env)
    browser = env.client()
    await env.signin(browser, parent.email)
    _, challenge = pkce()
    page = await browser.get("/oauth/authorize", params=auth_params(app.client_id, challenge, aud=FHIR))
    assert page.status_code == 403 and "No patient has given you access" in page.text


async def test_disabling_the_account_ends_its_apps_access(env: Env) -> None:  # noqa: F811
    account = await env.account("patient")
    app = await _app(env)
    browser = env.client()
    await env.signin(browser, account.email)
    verifier, challenge = pkce()
    page = await browser.get("/oauth/authorize", params=auth_params(app.client_id, challenge, aud=FHIR))
    answer = await browser.post("/oauth/authorize", data={**consent_form(page.text), "decision": "approve"})
    code = query_of(answer.headers["location"])["code"]
    body = (await browser.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id,
        "code_verifier": verifier,
    })).json()  # fmt: skip
    actor = await _actor(env, body["access_token"])
    assert actor is not None and actor.kind is ActorKind.PATIENT and actor.patient_id == account.patient_id
    async with env.db.transaction() as conn:
        assert await service.disable_account(conn, env.org_id, account.id)
    assert await _actor(env, body["access_token"]) is None
    refreshed = await browser.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": app.client_id,
    })  # fmt: skip
    assert refreshed.status_code == 400
