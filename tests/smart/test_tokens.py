"""Bearer tokens (SECURITY.md row 18): the check every API request makes, refresh-token rotation
with reuse detection, revocation (RFC 7009) effective on the next request, introspection (RFC 7662),
and the patient's connected-apps page."""

from __future__ import annotations

import base64
import re

import pytest

from tests.smart.conftest import Smart, exchange, get_code


async def _launch(smart: Smart, **register: object) -> tuple[str, dict]:
    client, _ = await smart.register(**register)
    smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    answer = await exchange(smart, client.client_id, code, verifier)
    assert answer.status_code == 200, answer.text
    return client.client_id, answer.json()


async def _refresh(smart: Smart, client_id: str, refresh_token: str, **extra: str):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id, **extra}
    return await smart.http.post("/oauth/token", data=data)


# -- the bearer check --------------------------------------------------------------------------------


async def test_no_authorization_header_is_no_actor(smart: Smart) -> None:
    assert (await smart.http.get("/test/whoami")).json() == {"actor": None}


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer hca_unknown", "Bearer not-ours", "Token abc",
     "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."],
)  # fmt: skip
async def test_anything_but_a_live_access_token_is_401_invalid_token(smart: Smart, header: str) -> None:
    answer = await smart.http.get("/test/whoami", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_an_access_token_expires_after_an_hour(smart: Smart) -> None:
    _, body = await _launch(smart)
    smart.clock.advance(3599)
    assert (await smart.whoami(body["access_token"])).status_code == 200
    smart.clock.advance(2)
    assert (await smart.whoami(body["access_token"])).status_code == 401


async def test_a_refresh_token_is_not_an_access_token(smart: Smart) -> None:
    _, body = await _launch(smart)
    assert (await smart.whoami(body["refresh_token"])).status_code == 401


# -- refresh: rotation and reuse detection --------------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(smart: Smart) -> None:
    client_id, first = await _launch(smart)
    second = await _refresh(smart, client_id, first["refresh_token"])
    assert second.status_code == 200, second.text
    second_body = second.json()
    assert second_body["refresh_token"] != first["refresh_token"]
    assert second_body["patient"] == first["patient"] and second_body["scope"] == first["scope"]
    third = (await _refresh(smart, client_id, second_body["refresh_token"])).json()
    assert (await smart.whoami(third["access_token"])).status_code == 200
    # An attacker replays the first (already rotated) refresh token: refused, and every token
    # of the family dies - the legitimate app must sign in again.
    reuse = await _refresh(smart, client_id, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    for token in (first["access_token"], second_body["access_token"], third["access_token"]):
        assert (await smart.whoami(token)).status_code == 401
    assert (await _refresh(smart, client_id, third["refresh_token"])).status_code == 400


async def test_refresh_may_narrow_scopes_but_never_widen_them(smart: Smart) -> None:
    client_id, first = await _launch(smart)
    narrow = await _refresh(
        smart, client_id, first["refresh_token"], scope="patient/Observation.rs offline_access"
    )
    assert narrow.json()["scope"] == "patient/Observation.rs offline_access"
    wide = await _refresh(smart, client_id, narrow.json()["refresh_token"], scope="patient/*.cruds")
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"


async def test_a_refresh_token_belongs_to_its_client(smart: Smart) -> None:
    _, first = await _launch(smart)
    other, _ = await smart.register(name="Other")
    answer = await _refresh(smart, other.client_id, first["refresh_token"])
    assert answer.status_code == 400


# -- revocation ----------------------------------------------------------------------------------------------


async def test_revoking_an_access_token_kills_it_on_the_next_request(smart: Smart) -> None:
    client_id, body = await _launch(smart)
    assert (await smart.whoami(body["access_token"])).status_code == 200
    answer = await smart.http.post(
        "/oauth/revoke", data={"token": body["access_token"], "client_id": client_id}
    )
    assert answer.status_code == 200
    assert (await smart.whoami(body["access_token"])).status_code == 401
    assert (await _refresh(smart, client_id, body["refresh_token"])).status_code == 200


async def test_revoking_a_refresh_token_ends_the_whole_authorization(smart: Smart) -> None:
    client_id, body = await _launch(smart)
    answer = await smart.http.post(
        "/oauth/revoke", data={"token": body["refresh_token"], "client_id": client_id}
    )
    assert answer.status_code == 200
    assert (await smart.whoami(body["access_token"])).status_code == 401
    assert (await _refresh(smart, client_id, body["refresh_token"])).status_code == 400


async def test_another_client_cannot_revoke_a_token_and_unknown_tokens_are_fine(smart: Smart) -> None:
    _, body = await _launch(smart)
    other, _ = await smart.register(name="Other")
    answer = await smart.http.post(
        "/oauth/revoke", data={"token": body["access_token"], "client_id": other.client_id}
    )
    assert answer.status_code == 200
    assert (await smart.whoami(body["access_token"])).status_code == 200
    unknown = await smart.http.post("/oauth/revoke", data={"token": "nope", "client_id": other.client_id})
    assert unknown.status_code == 200


async def test_the_patient_revokes_an_app_from_the_connected_apps_page(smart: Smart) -> None:
    _, body = await _launch(smart, name="Sleep Tracker")
    page = await smart.http.get("/account/apps")
    assert page.status_code == 200 and "Sleep Tracker" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    grant = re.search(r'name="grant" value="([^"]+)"', page.text).group(1)
    forged = await smart.http.post("/account/apps", data={"grant": grant, "csrf": "0" * 64})
    assert forged.status_code == 403
    assert (await smart.whoami(body["access_token"])).status_code == 200
    answer = await smart.http.post("/account/apps", data={"grant": grant, "csrf": csrf})
    assert answer.status_code == 303
    assert (await smart.whoami(body["access_token"])).status_code == 401
    assert "Sleep Tracker" not in (await smart.http.get("/account/apps")).text


async def test_one_patient_cannot_revoke_anothers_app(smart: Smart) -> None:
    _, body = await _launch(smart, name="Sleep Tracker")
    page = await smart.http.get("/account/apps")
    grant_a = re.search(r'name="grant" value="([^"]+)"', page.text).group(1)
    _, body_b = await _launch(smart, name="Step Counter")  # signs in someone else
    page_b = await smart.http.get("/account/apps")
    assert "Sleep Tracker" not in page_b.text and "Step Counter" in page_b.text
    csrf_b = re.search(r'name="csrf" value="([^"]+)"', page_b.text).group(1)
    answer = await smart.http.post("/account/apps", data={"grant": grant_a, "csrf": csrf_b})
    assert answer.status_code == 303
    assert (await smart.whoami(body["access_token"])).status_code == 200
    assert (await smart.whoami(body_b["access_token"])).status_code == 200


# -- introspection ---------------------------------------------------------------------------------------------


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def test_introspection_for_a_confidential_client(smart: Smart) -> None:
    client, secret = await smart.register(secret=True)
    assert secret is not None and client.auth_method == "client_secret_basic"
    user = smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    tokens = (await smart.http.post("/oauth/token", headers=_basic(client.client_id, secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "https://app.example.org/callback",
        "code_verifier": verifier,
    })).json()  # fmt: skip
    answer = await smart.http.post("/oauth/introspect", headers=_basic(client.client_id, secret),
                                   data={"token": tokens["access_token"]})  # fmt: skip
    info = answer.json()
    assert (
        info["active"] is True
        and info["client_id"] == client.client_id
        and info["patient"] == user.patient_id
    )
    assert info["scope"] == tokens["scope"] and info["fhirUser"] == f"Patient/{user.patient_id}"
    await smart.http.post(
        "/oauth/revoke", headers=_basic(client.client_id, secret), data={"token": tokens["access_token"]}
    )
    gone = await smart.http.post("/oauth/introspect", headers=_basic(client.client_id, secret),
                                 data={"token": tokens["access_token"]})  # fmt: skip
    assert gone.json() == {"active": False}


async def test_introspection_refuses_public_clients_and_wrong_secrets(smart: Smart) -> None:
    client_id, body = await _launch(smart)
    public = await smart.http.post(
        "/oauth/introspect", data={"token": body["access_token"], "client_id": client_id}
    )
    assert public.status_code == 401
    conf, _secret = await smart.register(secret=True)
    wrong = await smart.http.post("/oauth/introspect", headers=_basic(conf.client_id, "guess"),
                                  data={"token": body["access_token"]})  # fmt: skip
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")


async def test_introspection_tells_nothing_about_other_clients_tokens(smart: Smart) -> None:
    _, body = await _launch(smart)
    conf, secret = await smart.register(secret=True)
    answer = await smart.http.post("/oauth/introspect", headers=_basic(conf.client_id, secret or ""),
                                   data={"token": body["access_token"]})  # fmt: skip
    assert answer.json() == {"active": False}


async def test_a_disabled_client_loses_its_tokens(smart: Smart) -> None:
    from housecall.smart.clients import disable_client

    client_id, body = await _launch(smart)
    async with smart.db.transaction() as conn:
        assert await disable_client(conn, client_id)
    assert (await smart.whoami(body["access_token"])).status_code == 401
    assert (await _refresh(smart, client_id, body["refresh_token"])).status_code == 401


async def test_revocation_and_introspection_are_throttled_too(smart: Smart) -> None:
    from housecall.smart.throttle import Throttle

    client, secret = await smart.register(secret=True)
    smart.app.state.smart_throttle = Throttle(3)
    statuses = [
        (
            await smart.http.post(
                "/oauth/introspect", headers=_basic(client.client_id, secret or ""), data={"token": "x"}
            )
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    revoked = await smart.http.post(
        "/oauth/revoke", headers=_basic(client.client_id, secret or ""), data={"token": "x"}
    )
    assert revoked.status_code == 429 and revoked.headers["retry-after"]


async def test_expired_codes_and_tokens_are_purged_but_rotated_refresh_tokens_wait_for_their_expiry(
    smart_alone: Smart,
) -> None:
    smart = smart_alone
    from housecall.smart.tokens import token_hash

    client_id, first = await _launch(smart)
    second = (await _refresh(smart, client_id, first["refresh_token"])).json()
    async with smart.db.reader() as conn:
        grant_id = await conn.fetchval(
            "SELECT grant_id FROM oauth_token WHERE token_hash = $1", token_hash(first["access_token"])
        )

    async def rows() -> tuple[int, int]:
        async with smart.db.reader() as conn:
            codes = await conn.fetchval("SELECT count(*) FROM oauth_code WHERE grant_id = $1", grant_id)
            toks = await conn.fetchval("SELECT count(*) FROM oauth_token WHERE grant_id = $1", grant_id)
        return int(codes), int(toks)

    assert await rows() == (1, 4)  # the code; two access and two refresh tokens
    smart.clock.advance(2 * 86400)
    smart.app.state.smart_purged_at = 0
    await smart.http.post("/oauth/token", data={"grant_type": "none"})
    assert await rows() == (0, 2)  # both refresh tokens stay, the spent one too
    reuse = await _refresh(smart, client_id, first["refresh_token"])
    assert reuse.status_code == 400  # still recognised as reuse
    assert (await _refresh(smart, client_id, second["refresh_token"])).status_code == 400  # family revoked
    smart.clock.advance(91 * 86400)
    smart.app.state.smart_purged_at = 0
    await smart.http.post("/oauth/token", data={"grant_type": "none"})
    assert await rows() == (0, 0)
