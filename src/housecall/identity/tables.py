"""Identity tables (platform data, not clinical): organizations, accounts, sessions and the rest.

Registered on ``core.schema.metadata`` (which imports this module) so Alembic sees them. Times are
microseconds since the Unix epoch (UTC) in BIGINT columns, as everywhere in the schema. Secrets are
never stored as they are sent: session ids, e-mailed tokens and recovery codes are stored as their
SHA-256, passwords as argon2id hashes.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table

from housecall.core.schema import metadata

organization = Table(
    "organization",
    metadata,
    Column("id", String(64), primary_key=True),  # short slug chosen by the operator: "acme-health"
    Column("name", String(200), nullable=False),
    Column("fhir_id", String(64), nullable=True),  # its Organization resource
    Column("created", BigInteger, nullable=False),
)

account = Table(
    "account",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("org_id", String(64), ForeignKey("organization.id"), nullable=False),
    # Normalized (trimmed, lower case); unique across the installation (decision 0005).
    Column("email", String(254), nullable=False, unique=True),
    Column("email_verified", Boolean, nullable=False),
    Column("kind", String(16), nullable=False),  # patient | proxy | practitioner | staff
    Column("roles", String(200), nullable=False),  # space-separated access.actor.Role values
    Column("display_name", String(200), nullable=False),
    Column("patient_id", String(64), nullable=True),  # Patient/… of a patient account
    Column("practitioner_id", String(64), nullable=True),  # Practitioner/… of a clinician
    Column("password_hash", String(255), nullable=True),  # NULL until the owner sets one
    Column("password_changed", BigInteger, nullable=True),
    Column("totp_secret", String(64), nullable=True),  # base32; NULL = no MFA enrolled
    Column("totp_last_step", BigInteger, nullable=True),  # last accepted TOTP step: no replay
    Column("disabled", Boolean, nullable=False),
    Column("created", BigInteger, nullable=False),
    Index("ix_account_org", "org_id"),
)

recovery_code = Table(
    "recovery_code",
    metadata,
    Column("account_id", String(32), ForeignKey("account.id"), primary_key=True),
    Column("code_hash", String(64), primary_key=True),
    Column("used", BigInteger, nullable=True),
)

# One row per browser session. ``stage`` is how far sign-in got: "mfa" (password accepted, TOTP
# pending), "enrol" (password accepted, MFA enrolment required before anything else) or "full".
auth_session = Table(
    "auth_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("account_id", String(32), ForeignKey("account.id"), nullable=False),
    Column("stage", String(8), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("authenticated", BigInteger, nullable=False),  # last time the password was proved
    Column("pending_totp", String(64), nullable=True),  # secret shown during enrolment
    Column("acting_for", String(64), nullable=True),  # a proxy's chosen patient id
    Index("ix_auth_session_account", "account_id"),
)

# E-mailed single-use links: purpose "verify" (confirm the address), "reset" (choose a new
# password) or "setup" (an account created by an operator without a password).
email_token = Table(
    "email_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", String(32), ForeignKey("account.id"), nullable=False),
    Column("purpose", String(8), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=True),
    Index("ix_email_token_account", "account_id"),
)

# Failed sign-in attempts, one row each, for sliding-window throttling that holds across
# processes. ``key`` is "acct:<sha256 of the e-mail>" or "ip:<address>"; rows older than the
# window are deleted as new ones arrive.
signin_failure = Table(
    "signin_failure",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(80), nullable=False),
    Column("at", BigInteger, nullable=False),
    Index("ix_signin_failure_key_at", "key", "at"),
)

# A patient's permission for a parent or caregiver to act for them (a RelatedPerson resource
# describes the relationship in FHIR). Revoking sets ``revoked``; the row stays as the record.
proxy_grant = Table(
    "proxy_grant",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("org_id", String(64), ForeignKey("organization.id"), nullable=False),
    Column("proxy_account_id", String(32), ForeignKey("account.id"), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("related_person_id", String(64), nullable=True),
    Column("relationship", String(32), nullable=False),  # parent | caregiver | guardian | …
    Column("granted_by", String(64), nullable=False),  # account id, or "system:<operator>"
    Column("since", BigInteger, nullable=False),
    Column("until", BigInteger, nullable=True),
    Column("revoked", BigInteger, nullable=True),
    Index("ix_proxy_grant_proxy", "proxy_account_id"),
)
