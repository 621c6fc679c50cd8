"""Authorization code with PKCE, ported from the ONC (g)(10) / Inferno SMART cases (SECURITY.md
row 16): the four PKCE failures, code replay and age, redirect URI variants, state, aud."""

from __future__ import annotations

import re

import pytest

from housecall.access.actor import ActorKind
from tests.smart.conftest import (
    FHIR,
    REDIRECT,
    Smart,
    approve,
    auth_params,
    consent_form,
    exchange,
    get_code,
    pkce,
    query_of,
)


async def test_standalone_patient_launch_gives_the_patients_own_context(smart: Smart) -> None:
    client, _ = await smart.register()
    user = smart.sign_in(ActorKind.PATIENT)
    code, verifier, _ = await get_code(smart, client.client_id)
    answer = await exchange(smart, client.client_id, code, verifier)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert answer.headers["cache-control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["patient"] == user.patient_id
    assert set(body["scope"].split()) == {"openid", "fhirUser", "launch/patient", "offline_access",
                                          "patient/Observation.rs", "patient/Patient.r"}  # fmt: skip
    assert body["refresh_token"] and body["id_token"]
    me = (await smart.whoami(body["access_token"])).json()
    assert me["kind"] == "patient" and me["patient_id"] == user.patient_id and me["org_id"] == smart.org
    assert me["client_id"] == client.client_id and me["account_id"] == user.account_id
    assert me["session_id"] and me["session_id"] not in body["access_token"]


async def test_the_id_token_is_signed_with_the_published_key_and_names_the_fhir_user(smart: Smart) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    client, _ = await smart.register()
    user = smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id, nonce="n-123")
    body = (await exchange(smart, client.client_id, code, verifier)).json()
    key_set = KeySet.import_key_set((await smart.http.get("/oauth/jwks")).json())
    token = jwt.decode(body["id_token"], key_set, algorithms=["RS256"])
    assert token.claims["iss"] == FHIR and token.claims["aud"] == client.client_id
    assert token.claims["fhirUser"] == f"{FHIR}/Patient/{user.patient_id}"
    assert token.claims["nonce"] == "n-123" and token.claims["sub"] == user.account_id


# -- PKCE: the four failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "no PKCE at all"),
        ({"code_challenge": ""}, "blank challenge"),
        ({"code_challenge_method": "plain"}, "plain method"),
        ({"code_challenge_method": None}, "method missing"),
        ({"code_challenge": "short"}, "not an S256 challenge"),
    ],
)
async def test_authorization_requests_without_s256_pkce_are_refused(
    smart: Smart, over: dict, why: str
) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    _, challenge = pkce()
    params = auth_params(client.client_id, challenge, **over)
    answer = await smart.http.get("/oauth/authorize", params=params)
    assert answer.status_code == 303, why
    q = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith(REDIRECT)
    assert q["error"] == "invalid_request" and q["state"] == params["state"] and "code" not in q


@pytest.mark.parametrize(
    ("verifier", "why"),
    [
        (None, "verifier missing"),
        ("", "verifier blank"),
        ("x" * 50, "wrong verifier"),
        ("plain", "the plain form"),
    ],
)
async def test_token_requests_with_a_missing_blank_or_wrong_verifier_are_refused(
    smart: Smart, verifier: str | None, why: str
) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    code, real, params = await get_code(smart, client.client_id)
    if verifier == "plain":
        verifier = params["code_challenge"]  # the challenge itself, as a plain-method client would send
    answer = await exchange(smart, client.client_id, code, verifier)
    assert answer.status_code == 400, why
    assert answer.json()["error"] == "invalid_grant"
    # The code is spent by the failed attempt: the right verifier cannot use it afterwards.
    assert (await exchange(smart, client.client_id, code, real)).status_code == 400


# -- codes -----------------------------------------------------------------------------------------


async def test_a_replayed_code_is_refused_and_revokes_what_it_issued(smart: Smart) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    first = await exchange(smart, client.client_id, code, verifier)
    assert first.status_code == 200
    assert (await smart.whoami(first.json()["access_token"])).status_code == 200
    replay = await exchange(smart, client.client_id, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (await smart.whoami(first.json()["access_token"])).status_code == 401
    refreshed = await smart.http.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"], "client_id": client.client_id,
    })  # fmt: skip
    assert refreshed.status_code == 400


@pytest.mark.parametrize(("age", "ok"), [(9 * 60, True), (10 * 60 + 1, False), (3600, False)])
async def test_codes_live_at_most_ten_minutes(smart: Smart, age: int, ok: bool) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    smart.clock.advance(age)
    answer = await exchange(smart, client.client_id, code, verifier)
    assert (answer.status_code == 200) is ok, answer.text


async def test_a_code_is_bound_to_its_client(smart: Smart) -> None:
    client, _ = await smart.register()
    other, _ = await smart.register(name="Other App")
    smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    answer = await exchange(smart, other.client_id, code, verifier)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


# -- redirect URIs, state, aud ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        REDIRECT + "/",  # trailing slash
        "https://app.example.org:8443/callback",  # different port
        REDIRECT + "?extra=1",  # extra query
        "http://app.example.org/callback",  # http instead of https
        "https://APP.example.org/callback",  # case of the host
        "https://app.example.org/callback#frag",
        "https://evil.example.org/callback",
        "",
    ],
)
async def test_unregistered_redirect_uris_show_an_error_page_and_never_redirect(
    smart: Smart, variant: str
) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    _, challenge = pkce()
    params = auth_params(client.client_id, challenge, redirect_uri=variant)
    answer = await smart.http.get("/oauth/authorize", params=params)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "registered" in answer.text
    # Nor at the decision step, with a valid form whose redirect URI was altered.
    page = await smart.http.get("/oauth/authorize", params=auth_params(client.client_id, challenge))
    form = {**consent_form(page.text), "redirect_uri": variant, "decision": "approve"}
    posted = await smart.http.post("/oauth/authorize", data=form)
    assert posted.status_code == 400 and "location" not in posted.headers


async def test_the_token_request_must_repeat_the_same_redirect_uri(smart: Smart) -> None:
    client, _ = await smart.register(redirect_uris=[REDIRECT, REDIRECT + "2"])
    smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    answer = await exchange(smart, client.client_id, code, verifier, redirect_uri=REDIRECT + "2")
    assert answer.status_code == 400


async def test_an_unknown_or_disabled_client_gets_an_error_page(smart: Smart) -> None:
    smart.sign_in()
    _, challenge = pkce()
    answer = await smart.http.get("/oauth/authorize", params=auth_params("nobody", challenge))
    assert answer.status_code == 400 and "location" not in answer.headers


async def test_state_is_echoed_on_success_and_on_denial(smart: Smart) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    _, challenge = pkce()
    params = auth_params(client.client_id, challenge, state="s t&ate=1")
    page = await smart.http.get("/oauth/authorize", params=params)
    denied = await smart.http.post("/oauth/authorize", data={**consent_form(page.text), "decision": "deny"})
    q = query_of(denied.headers["location"])
    assert q == {"error": "access_denied", "error_description": "the user declined", "state": "s t&ate=1"}
    ok = await approve(smart, params)
    assert query_of(ok.headers["location"])["state"] == "s t&ate=1"


async def test_state_is_required(smart: Smart) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    _, challenge = pkce()
    answer = await smart.http.get(
        "/oauth/authorize", params=auth_params(client.client_id, challenge, state=None)
    )
    assert query_of(answer.headers["location"])["error"] == "invalid_request"


@pytest.mark.parametrize(
    "aud",
    [
        None,
        "https://other.example.org/fhir",
        "https://testserver",
        "http://testserver/fhir",
        f"{FHIR}/Patient",
    ],
)
async def test_aud_must_be_this_fhir_server(smart: Smart, aud: str | None) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    _, challenge = pkce()
    answer = await smart.http.get(
        "/oauth/authorize", params=auth_params(client.client_id, challenge, aud=aud)
    )
    assert query_of(answer.headers["location"])["error"] == "invalid_request"


# -- sign-in, consent, CSRF ------------------------------------------------------------------------------


async def test_someone_not_signed_in_is_sent_to_sign_in_and_back(smart: Smart) -> None:
    client, _ = await smart.register()
    smart.user = None
    _, challenge = pkce()
    answer = await smart.http.get("/oauth/authorize", params=auth_params(client.client_id, challenge))
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith("/signin?next=%2Foauth%2Fauthorize%3F")


async def test_the_consent_page_names_the_app_and_the_scopes_in_plain_words(smart: Smart) -> None:
    client, _ = await smart.register(name="Glucose <Diary>")
    smart.sign_in()
    _, challenge = pkce()
    page = await smart.http.get("/oauth/authorize", params=auth_params(client.client_id, challenge))
    assert "Glucose &lt;Diary&gt;" in page.text and "<Diary>" not in page.text
    assert "Read and search observation records in this patient&#39;s record" in page.text
    assert page.headers["cache-control"] == "no-store"
    # The answer to the form is a redirect to the app: the page's CSP allows that origin only.
    assert "form-action 'self' https://app.example.org;" in page.headers["content-security-policy"]


async def test_cors_allows_the_origins_of_registered_redirect_uris_only(smart: Smart) -> None:
    from housecall.smart.clients import disable_client, registered_origins

    client, _ = await smart.register(redirect_uris=["https://Cors.Example.org:8443/cb"])
    check = smart.app.state.cors_origin_check
    assert await check("https://cors.example.org:8443")
    assert not await check("https://cors.example.org") and not await check("https://evil.example.org")
    async with smart.db.transaction() as conn:
        assert "https://cors.example.org:8443" in await registered_origins(conn)
        await disable_client(conn, client.client_id)
    assert not await check("https://cors.example.org:8443")


@pytest.mark.parametrize("tamper", ["missing", "wrong", "no-cookie", "cross-origin"])
async def test_the_decision_needs_the_forms_csrf_token(smart: Smart, tamper: str) -> None:
    client, _ = await smart.register()
    smart.sign_in()
    _, challenge = pkce()
    page = await smart.http.get("/oauth/authorize", params=auth_params(client.client_id, challenge))
    form = {**consent_form(page.text), "decision": "approve"}
    headers = {}
    if tamper == "missing":
        form.pop("csrf")
    elif tamper == "wrong":
        form["csrf"] = "0" * 64
    elif tamper == "no-cookie":
        smart.http.cookies.clear()
    else:
        headers["Origin"] = "https://evil.example.org"
    answer = await smart.http.post("/oauth/authorize", data=form, headers=headers)
    assert answer.status_code == 403 and "location" not in answer.headers


async def test_scopes_the_client_did_not_register_are_not_granted(smart: Smart) -> None:
    client, _ = await smart.register(scopes=["launch/patient", "patient/Observation.rs"])
    smart.sign_in()
    code, verifier, _ = await get_code(
        smart,
        client.client_id,
        scope="launch/patient patient/*.cruds patient/Observation.rs user/*.cruds system/*.rs",
    )
    body = (await exchange(smart, client.client_id, code, verifier)).json()
    assert body["scope"] == "launch/patient patient/Observation.rs"
    assert "refresh_token" not in body and "id_token" not in body


async def test_nothing_grantable_is_invalid_scope(smart: Smart) -> None:
    client, _ = await smart.register(scopes=["patient/Observation.rs"])
    smart.sign_in()
    _, challenge = pkce()
    answer = await smart.http.get(
        "/oauth/authorize", params=auth_params(client.client_id, challenge, scope="system/*.cruds")
    )
    assert query_of(answer.headers["location"])["error"] == "invalid_scope"


async def test_a_clinician_gets_user_scopes_and_no_patient_context(smart: Smart) -> None:
    client, _ = await smart.register()
    user = smart.sign_in(ActorKind.PRACTITIONER)
    code, verifier, _ = await get_code(
        smart, client.client_id, scope="openid fhirUser launch/patient user/Observation.rs patient/*.rs"
    )
    body = (await exchange(smart, client.client_id, code, verifier)).json()
    assert body["scope"] == "openid fhirUser user/Observation.rs" and "patient" not in body
    me = (await smart.whoami(body["access_token"])).json()
    assert me["kind"] == "practitioner" and me["patient_id"] is None and me["fhir_user"] == user.fhir_user


async def test_a_public_client_cannot_use_client_credentials(smart: Smart) -> None:
    client, _ = await smart.register()
    answer = await smart.http.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": client.client_id}
    )
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


async def test_the_patient_in_context_never_comes_from_the_request(smart: Smart) -> None:
    client, _ = await smart.register()
    user = smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    body = (await exchange(smart, client.client_id, code, verifier, patient="someone-else")).json()
    assert body["patient"] == user.patient_id
    verifier2, challenge = pkce()
    params = auth_params(client.client_id, challenge)
    answer = await approve(smart, params, {"patient": "someone-else"})
    code2 = query_of(answer.headers["location"])["code"]
    body2 = (await exchange(smart, client.client_id, code2, verifier2)).json()
    assert body2["patient"] == user.patient_id
    assert re.fullmatch(r"p-[0-9a-f]{8}", body2["patient"])
