"""Backend services (SMART Backend Services; SECURITY.md rows 15 and 18): client credentials with a
private_key_jwt assertion, every way an assertion can be wrong, client_secret_basic, device
clients, and the token endpoint's throttle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from housecall.smart.assertions import ASSERTION_TYPE
from tests.smart.conftest import BASE, Smart

TOKEN_URL = f"{BASE}/oauth/token"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
EC = ECKey.generate_key("P-384", parameters={"kid": "ec-1"}, private=True)
STRANGER = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)  # same kid, other key
JWKS = {"keys": [RSA.as_dict(private=False), EC.as_dict(private=False)]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(client_id: str, **over: Any) -> dict[str, Any]:
    c = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": int(time.time()) + 240,
        "jti": uuid.uuid4().hex,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = RSA, alg: str = "RS384", kid: str | None = "rsa-1") -> str:
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    return jwt.encode(header, payload, key, algorithms=[alg])


def unsigned(payload: dict[str, Any]) -> str:
    return (
        b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(payload).encode())
        + "."
    )


def hs256_with_public_key(payload: dict[str, Any]) -> str:
    """The key-confusion attack: HMAC-sign with the server-known public key as the secret."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(payload).encode())
    secret = RSA.as_pem(private=False)
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


async def token_request(
    smart: Smart, assertion: str, scope: str | None = "system/Observation.rs", **extra: str
):
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    if scope is not None:
        data["scope"] = scope
    data.update(extra)
    return await smart.http.post("/oauth/token", data=data)


async def backend(smart: Smart, **kw: Any):
    kw.setdefault("scopes", ["system/Observation.rs", "system/Patient.r"])
    client, _ = await smart.register(name="Lab Integration", grant="client_credentials", jwks=JWKS, **kw)
    return client


async def test_client_credentials_with_an_rs384_assertion_end_to_end(smart: Smart) -> None:
    client = await backend(smart)
    answer = await token_request(smart, sign(claims(client.client_id)))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (
        body["token_type"] == "Bearer"
        and body["scope"] == "system/Observation.rs"
        and body["expires_in"] == 3600
    )
    assert "refresh_token" not in body and "patient" not in body and "id_token" not in body
    me = (await smart.whoami(body["access_token"])).json()
    assert me == {
        "kind": "app", "org_id": smart.org, "account_id": None, "fhir_user": None, "patient_id": None,
        "client_id": client.client_id, "scopes": ["system/Observation.rs"], "session_id": me["session_id"],
    }  # fmt: skip


async def test_an_es384_assertion_works_too_and_no_scope_means_all_registered(smart: Smart) -> None:
    client = await backend(smart)
    answer = await token_request(smart, sign(claims(client.client_id), EC, "ES384", "ec-1"), scope=None)
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "system/Observation.rs system/Patient.r"


def _cases() -> list[tuple[str, Any]]:
    def now() -> int:  # when the case runs, not when it was collected (the suite takes minutes)
        return int(time.time())

    return [
        ("wrong aud", lambda cid: sign(claims(cid, aud="https://other.example.org/oauth/token"))),
        ("aud is the FHIR base", lambda cid: sign(claims(cid, aud=f"{BASE}/fhir"))),
        ("wrong iss", lambda cid: sign(claims(cid, iss="someone-else"))),
        ("wrong sub", lambda cid: sign(claims(cid, sub="someone-else"))),
        ("expired", lambda cid: sign(claims(cid, exp=now() - 120))),
        ("exp more than five minutes ahead", lambda cid: sign(claims(cid, exp=now() + 3600))),
        ("no exp", lambda cid: sign(claims(cid, exp=None))),
        ("no jti", lambda cid: sign(claims(cid, jti=None))),
        ("not valid yet", lambda cid: sign(claims(cid, nbf=now() + 600))),
        ("alg none", lambda cid: unsigned(claims(cid))),
        ("HS256 with the public key (key confusion)", lambda cid: hs256_with_public_key(claims(cid))),
        ("RS256 instead of RS384", lambda cid: sign(claims(cid), RSA, "RS256")),
        ("signed by another key with the same kid", lambda cid: sign(claims(cid), STRANGER)),
        ("unknown kid", lambda cid: sign(claims(cid), RSA, "RS384", "nope")),
        ("ES384 signature claimed for the RSA kid", lambda cid: sign(claims(cid), EC, "ES384", "rsa-1")),
        ("tampered payload", lambda cid: _tamper(sign(claims(cid)))),
        ("not a JWT", lambda cid: "garbage"),
    ]


def _tamper(token: str) -> str:
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["exp"] += 60
    return f"{head}.{b64(json.dumps(payload).encode())}.{sig}"


@pytest.mark.parametrize(("why", "make"), _cases(), ids=[c[0] for c in _cases()])
async def test_bad_assertions_are_refused(smart: Smart, why: str, make: Any) -> None:
    client = await backend(smart)
    answer = await token_request(smart, make(client.client_id), client_id=client.client_id)
    assert answer.status_code == 401, why
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["cache-control"] == "no-store"


async def test_a_replayed_jti_is_refused(smart: Smart) -> None:
    client = await backend(smart)
    assertion = sign(claims(client.client_id))
    assert (await token_request(smart, assertion)).status_code == 200
    replay = await token_request(smart, assertion)
    assert replay.status_code == 401 and "jti" in replay.json()["error_description"]
    same_jti = sign(
        claims(
            client.client_id, jti=json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))["jti"]
        )
    )
    assert (await token_request(smart, same_jti)).status_code == 401


async def test_backends_get_system_scopes_they_registered_only(smart: Smart) -> None:
    client = await backend(smart)
    for scope in ("patient/*.rs", "user/Observation.rs", "system/Observation.cruds", "system/Condition.r"):
        answer = await token_request(smart, sign(claims(client.client_id)), scope=scope)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_scope", scope


async def test_a_disabled_backend_gets_no_token(smart: Smart) -> None:
    from housecall.smart.clients import disable_client

    client = await backend(smart)
    async with smart.db.transaction() as conn:
        await disable_client(conn, client.client_id)
    assert (await token_request(smart, sign(claims(client.client_id)))).status_code == 401


async def test_client_secret_basic_for_a_backend(smart: Smart) -> None:
    client, secret = await smart.register(name="Billing", grant="client_credentials", secret=True,
                                          scopes=["system/Patient.r"])  # fmt: skip
    assert secret is not None
    auth = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    answer = await smart.http.post("/oauth/token", headers={"Authorization": f"Basic {auth}"},
                                   data={"grant_type": "client_credentials", "scope": "system/Patient.r"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert (await smart.whoami(answer.json()["access_token"])).json()["kind"] == "app"
    bad = base64.b64encode(f"{client.client_id}:{secret}x".encode()).decode()
    wrong = await smart.http.post("/oauth/token", headers={"Authorization": f"Basic {bad}"},
                                  data={"grant_type": "client_credentials"})  # fmt: skip
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    # The secret is not accepted in the form body, nor with the JWKS method.
    post = await smart.http.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": client.client_id,
                                                       "client_secret": secret})  # fmt: skip
    assert post.status_code == 401


async def test_a_device_client_acts_as_its_device(smart: Smart) -> None:
    client = await backend(smart, device_id="bp-cuff-7", scopes=["system/Observation.c"])
    answer = await token_request(smart, sign(claims(client.client_id)), scope="system/Observation.c")
    assert answer.status_code == 200, answer.text
    me = (await smart.whoami(answer.json()["access_token"])).json()
    assert me["kind"] == "device" and me["fhir_user"] == "Device/bp-cuff-7" and me["patient_id"] is None


async def test_the_token_endpoint_is_throttled_per_client_with_retry_after(smart: Smart) -> None:
    from housecall.smart.throttle import Throttle

    smart.app.state.smart_throttle = Throttle(5)
    client = await backend(smart)
    statuses = [(await token_request(smart, sign(claims(client.client_id)))).status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]
    answer = await token_request(smart, sign(claims(client.client_id)))
    assert answer.status_code == 429 and 1 <= int(answer.headers["retry-after"]) <= 60


def test_the_throttle_window_slides() -> None:
    from housecall.smart.throttle import Throttle

    t = Throttle(2, window=60)
    assert [t.hit("k", 0), t.hit("k", 1), t.hit("k", 2) > 0, t.hit("other", 2)] == [0, 0, True, 0]
    assert t.hit("k", 61) == 0
