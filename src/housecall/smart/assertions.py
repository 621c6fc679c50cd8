"""JWT client assertions (RFC 7523 section 3, SMART Backend Services "Authenticating to the Token
endpoint": https://hl7.org/fhir/smart-app-launch/backend-services.html).

This is the one JWT input the server accepts (its access tokens are opaque, decision 0008), so it
carries every JWT check: the algorithm is taken from a fixed list of asymmetric ones before any
key is touched (``alg: none`` and HS* signed with a public key never reach a verifier), the key
comes from the client's registered JWKS only (never from ``jku``/``jwk``/``x5u`` in the header),
``iss`` = ``sub`` = client id, ``aud`` = the token endpoint URL, ``exp`` in the future and at most
five minutes away, and ``jti`` is single-use (the caller records it).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")  # SMART Backend Services: servers SHALL support both
_KTY = {"RS384": "RSA", "ES384": "EC"}
MAX_LIFETIME = 300  # seconds: "exp ... no more than five minutes in the future"
LEEWAY = 30  # seconds of clock difference tolerated on exp


class AssertionRefused(Exception):
    """The assertion does not authenticate the client; the message says why (for the log, and
    as error_description: it names a rule, never a secret)."""


@dataclass(frozen=True)
class Assertion:
    jti: str
    exp: int


def unverified_header(token: str) -> dict[str, Any]:
    try:
        head = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AssertionRefused("not a JWT") from exc
    if not isinstance(header, dict):
        raise AssertionRefused("not a JWT")
    return header


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim before verification: only to find which client's keys to verify with."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None


def verify_assertion(token: str, *, client_id: str, keys: KeySet, audience: str, now: float) -> Assertion:
    header = unverified_header(token)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AssertionRefused(f"alg {alg!r} is not accepted (use {' or '.join(ALGORITHMS)})")
    if header.get("crit"):
        raise AssertionRefused("critical header parameters are not supported")
    kid = header.get("kid")
    candidates = [k for k in keys.keys if k.key_type == _KTY[alg] and (kid is None or k.kid == kid)]
    if not candidates:
        raise AssertionRefused("no registered key matches the assertion's kid and algorithm")
    claims: dict[str, Any] | None = None
    for key in candidates:
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
            break
        except (JoseError, ValueError):
            continue
    if claims is None:
        raise AssertionRefused("signature does not verify with the registered keys")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRefused("iss and sub must both be the client id")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise AssertionRefused("aud must be the token endpoint URL")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AssertionRefused("exp is required")
    if exp + LEEWAY < now:
        raise AssertionRefused("the assertion has expired")
    if exp > now + MAX_LIFETIME + LEEWAY:
        raise AssertionRefused("exp may be at most five minutes in the future")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now + LEEWAY:
        raise AssertionRefused("the assertion is not valid yet")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 200:
        raise AssertionRefused("jti is required")
    return Assertion(jti=jti, exp=int(exp))
