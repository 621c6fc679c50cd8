"""One standalone patient launch in a real browser (Debian's Chromium, headless) against a live
``housecall serve`` on 127.0.0.1: the patient signs in on identity's page, approves on the consent
page, the app receives its code, the test - acting as the app - exchanges it with httpx and reads
the record through /fhir, and the patient revokes the app from the connected-apps page: the next
API request and the refresh are refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from housecall.smart import clients, tokens
from tests.identity.conftest import PASSWORD, Env, env, smtp  # noqa: F401 - fixtures used below
from tests.smart.conftest import query_of
from tests.support import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALLED = CHROMIUM.exists()
APP_CALLBACK = "https://app.example.org/callback"


@pytest.fixture
async def live(env: Env) -> AsyncIterator[LiveServer]:  # noqa: F811
    server = LiveServer(env.settings.database_url, extra_env={
        "HOUSECALL_ARGON2_TIME_COST": "1", "HOUSECALL_ARGON2_MEMORY_KIB": "1024", "HOUSECALL_ARGON2_PARALLELISM": "1",
    })  # fmt: skip
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_standalone_patient_launch_in_chromium(env: Env, live: LiveServer) -> None:  # noqa: F811
    from playwright.async_api import async_playwright

    assert CHROMIUM_INSTALLED, "Debian's chromium is required for the browser tests"
    account = await env.account("patient")
    async with env.db.transaction() as conn:
        app, _ = await clients.create_client(
            conn, name="Blood Pressure Diary", grant="authorization_code", redirect_uris=[APP_CALLBACK],
            scopes=["openid", "fhirUser", "launch/patient", "offline_access", "patient/Observation.rs",
                    "patient/Patient.r"], now_us=tokens.now_us_clock(),
        )  # fmt: skip
    fhir_base = f"{live.base}/fhir"
    async with httpx.AsyncClient() as http:
        config = (await http.get(f"{fhir_base}/.well-known/smart-configuration")).json()
    assert config["authorization_endpoint"] == f"{live.base}/oauth/authorize"

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(12)
    authorize = config["authorization_endpoint"] + "?" + urlencode({
        "response_type": "code", "client_id": app.client_id, "redirect_uri": APP_CALLBACK,
        "scope": "openid fhirUser launch/patient offline_access patient/Observation.rs patient/Patient.r",
        "state": state, "aud": fhir_base, "code_challenge": challenge, "code_challenge_method": "S256",
    })  # fmt: skip

    landed: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page()

            async def app_callback(route) -> None:  # the app's own page: never leaves the machine
                landed.append(route.request.url)
                await route.fulfill(status=200, content_type="text/html", body="<p>app</p>")

            await page.route("https://app.example.org/**", app_callback)
            await page.goto(authorize)
            assert "/signin" in page.url
            await page.fill("input[name=email]", account.email)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/oauth/authorize?**")
            assert await page.inner_text("#app-name") == "Blood Pressure Diary"
            listed = await page.locator("#scopes li").all_inner_texts()
            assert "Read and search observation records in this patient's record" in listed
            await page.click("#approve")
            await page.wait_for_url("https://app.example.org/callback?**")

            # The test is the app now: exchange the code, then use the token at the FHIR API.
            q = query_of(landed[-1])
            assert q["state"] == state
            async with httpx.AsyncClient() as http:
                answer = await http.post(config["token_endpoint"], data={
                    "grant_type": "authorization_code", "code": q["code"], "redirect_uri": APP_CALLBACK,
                    "client_id": app.client_id, "code_verifier": verifier,
                })  # fmt: skip
                assert answer.status_code == 200, answer.text
                body = answer.json()
                keys = KeySet.import_key_set((await http.get(config["jwks_uri"])).json())
                assert body["patient"] == account.patient_id and body["refresh_token"]
                id_token = jwt.decode(body["id_token"], keys, algorithms=["RS256"])
                assert id_token.claims["fhirUser"] == f"{fhir_base}/Patient/{account.patient_id}"
                bearer = {"Authorization": f"Bearer {body['access_token']}"}
                record = await http.get(f"{fhir_base}/Patient/{account.patient_id}", headers=bearer)
                assert record.status_code == 200 and record.json()["id"] == account.patient_id

                # The patient takes the access back from the portal, in the same browser.
                await page.goto(f"{live.base}/account/apps")
                await page.click("text=Revoke Blood Pressure Diary")
                await page.wait_for_url(f"{live.base}/account/apps")
                assert "No app can see your record" in await page.content()
                after = await http.get(f"{fhir_base}/Patient/{account.patient_id}", headers=bearer)
                assert after.status_code == 401
                refreshed = await http.post(config["token_endpoint"], data={
                    "grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": app.client_id,
                })  # fmt: skip
                assert refreshed.status_code == 400
        finally:
            await browser.close()
