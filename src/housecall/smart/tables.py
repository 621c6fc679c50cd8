"""Platform tables of the authorization server (not FHIR resources).

Secrets are never stored: client secrets, authorization codes and tokens are kept as SHA-256
hashes of high-entropy random values (256 bits), which is what makes a lookup one indexed probe
and a stolen table useless. Times are microseconds since the Unix epoch (UTC), as everywhere in the
schema.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, String, Table, Text

from housecall.core.schema import metadata

oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    # None: an app any organization's users may authorize (the organization comes from the user);
    # backend clients always belong to one organization.
    Column("org_id", String(64), nullable=True),
    Column("name", String(200), nullable=False),
    Column("grant_types", String(200), nullable=False),  # space-separated
    Column("redirect_uris", Text, nullable=False),  # JSON list; matched exactly
    Column("scopes", Text, nullable=False),  # space-separated scopes it may be granted
    Column("auth_method", String(32), nullable=False),  # none | client_secret_basic | private_key_jwt
    Column("secret_hash", String(64), nullable=True),
    Column("jwks", Text, nullable=True),  # JSON Web Key Set of its public keys
    Column("device_id", String(64), nullable=True),  # the Device resource a device client speaks for
    Column("disabled", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# One authorization: what a user (or a backend client) was granted, and the family of tokens it
# produced. Revoking the grant kills every token of the family on their next use.
oauth_grant = Table(
    "oauth_grant",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("org_id", String(64), nullable=False),
    Column("account_id", String(64), nullable=True),
    Column("actor_kind", String(16), nullable=False),
    Column("roles", String(200), nullable=False),  # space-separated, as the account had them
    Column("fhir_user", String(160), nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("scopes", Text, nullable=False),
    Column("aud", String(500), nullable=False),  # the FHIR base URL the grant is for
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_oauth_grant_account", "account_id"),
    Index("ix_oauth_grant_patient", "patient_id"),
)

oauth_code = Table(
    "oauth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(32), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("nonce", String(500), nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
)

oauth_token = Table(
    "oauth_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("token_id", String(32), nullable=False, unique=True),  # the audit trail's session id
    Column("grant_id", String(32), nullable=False),
    Column("token_type", String(8), nullable=False),  # access | refresh
    Column("scopes", Text, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),  # a refresh token is used once (rotation)
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_oauth_token_grant", "grant_id"),
)

# Client-assertion ids already seen (RFC 7523 3: jti single-use); kept until the assertion expires.
oauth_jti = Table(
    "oauth_jti",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# The server's own keys: the RSA key that signs id_tokens (published at the JWKS URI). Made on
# first use, shared by processes.
smart_key = Table(
    "smart_key",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("purpose", String(16), nullable=False),  # signing
    Column("material", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
