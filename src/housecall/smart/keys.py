"""The server's own key: the RSA key that signs id_tokens, published at the JWKS URI.

Made on first use and stored in ``smart_key`` so that every process of an installation signs with
the same key and publishes the same JWKS. Each process caches it after the first read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from housecall.core.db import Database

SIGNING_KID = "housecall-1"
ID_TOKEN_ALG = "RS256"  # noqa: S105 - an algorithm name. OpenID Connect's required one; SMART apps verify it


@dataclass(frozen=True)
class ServerKeys:
    signing: RSAKey

    def jwks(self) -> dict[str, Any]:
        public = self.signing.as_dict(private=False)
        return {"keys": [{**public, "kid": SIGNING_KID, "use": "sig", "alg": ID_TOKEN_ALG}]}

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": ID_TOKEN_ALG, "kid": SIGNING_KID, "typ": "JWT"}
        return jwt.encode(header, claims, self.signing, algorithms=[ID_TOKEN_ALG])


async def server_keys(db: Database, cache: dict[str, ServerKeys]) -> ServerKeys:
    """The installation's keys, made on first use (concurrent first uses agree on one)."""
    keys = cache.get("keys")
    if keys is not None:
        return keys
    async with db.transaction() as conn:
        material = await conn.fetchval("SELECT material FROM smart_key WHERE kid = $1", SIGNING_KID)
        if material is None:
            await conn.execute(
                "INSERT INTO smart_key (kid, purpose, material, created_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (kid) DO NOTHING",
                SIGNING_KID, "signing", json.dumps(RSAKey.generate_key(2048, private=True).as_dict(private=True)),
                int(time.time() * 1_000_000),
            )  # fmt: skip
            material = await conn.fetchval("SELECT material FROM smart_key WHERE kid = $1", SIGNING_KID)
    keys = ServerKeys(RSAKey.import_key(json.loads(material)))
    cache["keys"] = keys
    return keys
