"""Identity rules without HTTP: organizations, accounts, passwords, e-mailed links, MFA, proxies.

Every function works inside the caller's unit of work (``conn`` from ``db.transaction()``) and
never commits; e-mails are queued on the caller's ``Outbox`` and sent after the commit. Other
domains and tests create organizations and accounts through these functions, e.g.::

    async with db.transaction() as conn:
        await create_organization(conn, "acme", "Acme Health")
        account = await create_account(conn, "acme", "pat@example.org", "patient",
                                       password="a long passphrase", patient_id="p1")
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pyotp

from housecall.access.actor import ActorKind, Role
from housecall.access.policy import Access
from housecall.core.db import Conn, Database
from housecall.core.mail import Mail, Outbox
from housecall.core.settings import Settings, get_settings
from housecall.fhir import interactions as ix
from housecall.identity import passwords
from housecall.identity.clock import clock
from housecall.smart.tokens import forget_live_tokens
from housecall.web.i18n import Msg, _

# How long an e-mailed link lives (SECURITY.md row 13; OWASP ASVS 2.5.x).
TOKEN_LIFETIME_US = {
    "reset": 30 * 60 * 1_000_000,
    "verify": 72 * 3600 * 1_000_000,
    "setup": 72 * 3600 * 1_000_000,
}
RECOVERY_CODES = 10
TOTP_ISSUER = "Housecall"
ORG_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")

# The role an operator names when creating an account decides the kind of actor it becomes.
ROLE_KINDS: dict[str, ActorKind] = {
    "patient": ActorKind.PATIENT,
    "proxy": ActorKind.PROXY,
    **{role.value: ActorKind.STAFF for role in Role if role is not Role.CLINICIAN},
    Role.CLINICIAN.value: ActorKind.PRACTITIONER,
}
# Role codes in words, for pages (translated when shown).
ROLE_NAMES: dict[str, str] = {
    "patient": Msg("Patient"),
    "proxy": Msg("Family member or caregiver"),
    "staff": Msg("Staff"),
    "practitioner": Msg("Clinician"),
    Role.CLINICIAN.value: Msg("Clinician"),
    Role.FRONT_DESK.value: Msg("Front desk"),
    Role.NURSE.value: Msg("Nurse"),
    Role.RPM_NURSE.value: Msg("Remote monitoring nurse"),
    Role.INTERPRETER.value: Msg("Interpreter"),
    Role.ORG_ADMIN.value: Msg("Organization administrator"),
    Role.PRIVACY_OFFICER.value: Msg("Privacy officer"),
}


class IdentityError(ValueError):
    """A request the rules refuse; ``field`` names the form field it concerns, if any."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    fhir_id: str | None
    created: int


@dataclass(frozen=True)
class Account:
    id: str
    org_id: str
    email: str
    email_verified: bool
    kind: ActorKind
    roles: frozenset[Role]
    display_name: str
    patient_id: str | None
    practitioner_id: str | None
    mfa_enrolled: bool
    disabled: bool
    created: int
    has_password: bool

    @property
    def requires_mfa(self) -> bool:
        """Staff and clinicians must use a second factor; patients and proxies may."""
        return self.kind in (ActorKind.STAFF, ActorKind.PRACTITIONER)

    @property
    def fhir_user(self) -> str | None:
        if self.kind is ActorKind.PATIENT and self.patient_id:
            return f"Patient/{self.patient_id}"
        if self.practitioner_id:
            return f"Practitioner/{self.practitioner_id}"
        return None

    @property
    def role_label(self) -> str:
        if self.roles:
            return ", ".join(sorted(r.value for r in self.roles))
        return self.kind.value

    @property
    def role_names(self) -> str:
        """The roles in words, in the reader's language (pages; ``role_label`` is the codes)."""
        codes = sorted(r.value for r in self.roles) if self.roles else [self.kind.value]
        return ", ".join(_(ROLE_NAMES.get(c, c)) for c in codes)


ACCOUNT_COLUMNS = (
    "id, org_id, email, email_verified, kind, roles, display_name, patient_id, practitioner_id, "
    "totp_secret IS NOT NULL, disabled, created, password_hash IS NOT NULL"
)


def account_from_row(row: Sequence[Any]) -> Account:
    return Account(
        id=row[0],
        org_id=row[1],
        email=row[2],
        email_verified=bool(row[3]),
        kind=ActorKind(row[4]),
        roles=frozenset(Role(r) for r in str(row[5]).split()),
        display_name=row[6],
        patient_id=row[7],
        practitioner_id=row[8],
        mfa_enrolled=bool(row[9]),
        disabled=bool(row[10]),
        created=int(row[11]),
        has_password=bool(row[12]),
    )


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _ctx(conn: Conn, settings: Settings, org_id: str) -> ix.Ctx:
    """The store's context for writing the organization's own resources."""
    base = settings.public_url.rstrip("/") + "/fhir"
    return ix.Ctx(conn, settings, base, Access.system(org_id))


# --------------------------------------------------------------------------------------------------
# Organizations and their FHIR resources


async def create_organization(
    conn: Conn, org_id: str, name: str, *, settings: Settings | None = None
) -> Organization:
    """A tenant, with its FHIR Organization resource. Ids are short slugs chosen by the operator."""
    settings = settings or get_settings()
    if not ORG_ID.match(org_id):
        raise IdentityError(Msg("An organization id is 2-63 lower-case letters, digits or '-'."), "id")
    if not name.strip():
        raise IdentityError(Msg("An organization needs a name."), "name")
    if await conn.fetchval("SELECT 1 FROM organization WHERE id = $1", org_id):
        raise IdentityError(Msg("The organization '%(org)s' exists already.", org=org_id), "id")
    resource = {
        "resourceType": "Organization",
        "active": True,
        "name": name.strip(),
        "identifier": [{"system": "urn:housecall:organization", "value": org_id}],
    }
    created = await ix.create(_ctx(conn, settings, org_id), "Organization", resource)
    assert created.stored is not None
    now = clock.now_us()
    await conn.execute(
        "INSERT INTO organization (id, name, fhir_id, created) VALUES ($1, $2, $3, $4)",
        org_id,
        name.strip(),
        created.stored.res_id,
        now,
    )
    return Organization(org_id, name.strip(), created.stored.res_id, now)


async def get_organization(conn: Conn, org_id: str) -> Organization | None:
    row = await conn.fetchrow("SELECT id, name, fhir_id, created FROM organization WHERE id = $1", org_id)
    return Organization(row[0], row[1], row[2], int(row[3])) if row else None


async def list_organizations(conn: Conn) -> list[Organization]:
    rows = await conn.fetch("SELECT id, name, fhir_id, created FROM organization ORDER BY id")
    return [Organization(r[0], r[1], r[2], int(r[3])) for r in rows]


async def add_location(
    conn: Conn,
    org_id: str,
    name: str,
    state: str,
    *,
    city: str | None = None,
    settings: Settings | None = None,
) -> str:
    """A place the organization practises from, in a US state (two-letter code); returns its id."""
    settings = settings or get_settings()
    org = await get_organization(conn, org_id)
    if org is None:
        raise IdentityError(Msg("No organization '%(org)s'.", org=org_id), "org")
    if not re.fullmatch(r"[A-Z]{2}", state):
        raise IdentityError(Msg("A state is its two-letter USPS code, e.g. 'CA'."), "state")
    address: dict[str, Any] = {"state": state, "country": "US"}
    if city:
        address["city"] = city
    resource = {
        "resourceType": "Location",
        "status": "active",
        "name": name,
        "address": address,
        "managingOrganization": {"reference": f"Organization/{org.fhir_id}"},
    }
    created = await ix.create(_ctx(conn, settings, org_id), "Location", resource)
    assert created.stored is not None
    return created.stored.res_id


async def add_practitioner_role(
    conn: Conn,
    org_id: str,
    practitioner_id: str,
    *,
    specialty: tuple[str, str] | None = None,
    location_ids: Iterable[str] = (),
    licensed_states: Iterable[str] = (),
    settings: Settings | None = None,
) -> str:
    """A clinician's role in the organization: specialty (SNOMED code, display), the locations they
    work at and the states they are licensed in (as the role's ``extension``, one per state)."""
    settings = settings or get_settings()
    org = await get_organization(conn, org_id)
    if org is None:
        raise IdentityError(Msg("No organization '%(org)s'.", org=org_id), "org")
    if not await _resource_exists(conn, org_id, "Practitioner", practitioner_id):
        raise IdentityError(Msg("No Practitioner '%(id)s'.", id=practitioner_id), "practitioner")
    resource: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "active": True,
        "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
        "organization": {"reference": f"Organization/{org.fhir_id}"},
        "code": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "doctor"}
                ]
            }
        ],
    }
    if specialty:
        resource["specialty"] = [
            {"coding": [{"system": "http://snomed.info/sct", "code": specialty[0], "display": specialty[1]}]}
        ]
    locations = [{"reference": f"Location/{lid}"} for lid in location_ids]
    if locations:
        resource["location"] = locations
    states = list(licensed_states)
    if states:
        resource["extension"] = [{"url": "urn:housecall:licensed-state", "valueCode": s} for s in states]
    created = await ix.create(_ctx(conn, settings, org_id), "PractitionerRole", resource)
    assert created.stored is not None
    return created.stored.res_id


async def _resource_exists(conn: Conn, org_id: str, res_type: str, res_id: str) -> bool:
    """Whether the organization holds this live resource (read through the store, whose rules
    decide what belongs to an organization)."""
    stored = await _ctx(conn, get_settings(), org_id).store.read(res_type, res_id)
    return stored is not None and not stored.deleted


# --------------------------------------------------------------------------------------------------
# Accounts


async def create_account(
    conn: Conn,
    org_id: str,
    email: str,
    role: str,
    password: str | None = None,
    *,
    patient_id: str | None = None,
    practitioner_id: str | None = None,
    display_name: str | None = None,
    extra_roles: Iterable[str] = (),
    email_verified: bool | None = None,
    outbox: Outbox | None = None,
    settings: Settings | None = None,
) -> Account:
    """Create an account in ``org_id``.

    ``role`` is "patient" (needs ``patient_id``), "proxy", "clinician" (needs ``practitioner_id``)
    or a staff role (front_desk, nurse, rpm_nurse, interpreter, org_admin, privacy_officer).
    With a password the address counts as verified (an operator vouched for it) unless told
    otherwise; without one, an e-mail with a single-use link to choose a password is queued on
    ``outbox`` (which must then be given).
    """
    settings = settings or get_settings()
    email = normalize_email(email)
    if not EMAIL.match(email) or len(email) > 254:
        raise IdentityError(Msg("Enter an e-mail address like name@example.org."), "email")
    kind = ROLE_KINDS.get(role)
    if kind is None:
        raise IdentityError(
            Msg("Unknown role '%(role)s' (one of: %(roles)s).", role=role, roles=", ".join(ROLE_KINDS)),
            "role",
        )
    roles: set[Role] = set()
    if kind in (ActorKind.STAFF, ActorKind.PRACTITIONER):
        roles.add(Role(role))
    for extra in extra_roles:
        if ROLE_KINDS.get(extra) not in (ActorKind.STAFF, ActorKind.PRACTITIONER) or kind not in (
            ActorKind.STAFF,
            ActorKind.PRACTITIONER,
        ):
            raise IdentityError(
                Msg("The role '%(extra)s' cannot be added to a %(role)s account.", extra=extra, role=role),
                "role",
            )
        roles.add(Role(extra))
    if await get_organization(conn, org_id) is None:
        raise IdentityError(Msg("No organization '%(org)s'.", org=org_id), "org")
    if kind is ActorKind.PATIENT:
        if not patient_id or not await _resource_exists(conn, org_id, "Patient", patient_id):
            raise IdentityError(Msg("A patient account needs an existing Patient id."), "patient")
    elif patient_id:
        raise IdentityError(Msg("Only patient accounts are linked to a Patient."), "patient")
    if kind is ActorKind.PRACTITIONER and not practitioner_id:
        raise IdentityError(Msg("A clinician account needs an existing Practitioner id."), "practitioner")
    if practitioner_id:
        if kind not in (ActorKind.PRACTITIONER, ActorKind.STAFF):
            raise IdentityError(
                Msg("Only clinician and staff accounts are linked to a Practitioner."), "practitioner"
            )
        if not await _resource_exists(conn, org_id, "Practitioner", practitioner_id):
            raise IdentityError(Msg("No Practitioner '%(id)s'.", id=practitioner_id), "practitioner")
    if await conn.fetchval("SELECT 1 FROM account WHERE email = $1", email):
        raise IdentityError(Msg("An account with this e-mail address exists already."), "email")
    password_hash = None
    if password is not None:
        problem = passwords.password_problem(password, email)
        if problem:
            raise IdentityError(problem, "password")
        password_hash = await passwords.hash_password(settings, password)
    elif outbox is None:
        raise IdentityError(Msg("An account without a password needs an outbox for its set-up e-mail."))
    verified = (password is not None) if email_verified is None else email_verified
    now = clock.now_us()
    account_id = secrets.token_hex(8)
    await conn.execute(
        "INSERT INTO account (id, org_id, email, email_verified, kind, roles, display_name, patient_id, "
        "practitioner_id, password_hash, password_changed, totp_secret, totp_last_step, disabled, created) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, $12, $13)",
        account_id,
        org_id,
        email,
        verified,
        kind.value,
        " ".join(sorted(r.value for r in roles)),
        (display_name or email.split("@", 1)[0]).strip()[:200],
        patient_id,
        practitioner_id,
        password_hash,
        now if password_hash else None,
        False,
        now,
    )
    account = await get_account(conn, account_id)
    assert account is not None
    if password is None and outbox is not None:
        await send_link(conn, account, "setup", outbox, settings)
    elif not verified and outbox is not None:
        await send_link(conn, account, "verify", outbox, settings)
    return account


async def get_account(conn: Conn, account_id: str) -> Account | None:
    row = await conn.fetchrow(f"SELECT {ACCOUNT_COLUMNS} FROM account WHERE id = $1", account_id)
    return account_from_row(row) if row else None


async def find_account_by_email(conn: Conn, email: str) -> Account | None:
    row = await conn.fetchrow(
        f"SELECT {ACCOUNT_COLUMNS} FROM account WHERE email = $1", normalize_email(email)
    )
    return account_from_row(row) if row else None


async def list_accounts(conn: Conn, org_id: str | None = None) -> list[Account]:
    if org_id is None:
        rows = await conn.fetch(f"SELECT {ACCOUNT_COLUMNS} FROM account ORDER BY org_id, email")
    else:
        rows = await conn.fetch(
            f"SELECT {ACCOUNT_COLUMNS} FROM account WHERE org_id = $1 ORDER BY email", org_id
        )
    return [account_from_row(r) for r in rows]


async def verify_password(
    conn: Conn, email: str, password: str, *, settings: Settings | None = None
) -> Account | None:
    """The account when ``password`` is its password (and it is not disabled), else None.

    Takes the same time whether or not the address has an account (a dummy hash is checked).
    Upgrades the stored hash when the configured argon2 cost has changed. No throttling here:
    sign-in pages go through ``sessions.attempt``, and use ``check_credentials``.
    """
    settings = settings or get_settings()
    row = await conn.fetchrow(
        "SELECT id, password_hash, disabled FROM account WHERE email = $1", normalize_email(email)
    )
    stored = row[1] if row else None
    ok, rehash = await passwords.check_password(settings, stored, password)
    if not ok or row is None or row[2]:
        return None
    if rehash:
        await _upgrade_hash(conn, settings, row[0], stored, password)
    return await get_account(conn, row[0])


async def check_credentials(db: Database, email: str, password: str, settings: Settings) -> Account | None:
    """``verify_password`` for request handlers: the slow hash check runs outside any unit of
    work (on SQLite a transaction holds the one write lock of the whole database)."""
    async with db.reader() as conn:
        row = await conn.fetchrow(
            "SELECT id, password_hash, disabled FROM account WHERE email = $1", normalize_email(email)
        )
    stored = row[1] if row else None
    ok, rehash = await passwords.check_password(settings, stored, password)
    if not ok or row is None or row[2]:
        return None
    async with db.transaction() as conn:
        if rehash:
            await _upgrade_hash(conn, settings, row[0], stored, password)
        return await get_account(conn, row[0])


async def _upgrade_hash(
    conn: Conn, settings: Settings, account_id: str, old: str | None, password: str
) -> None:
    new_hash = await passwords.hash_password(settings, password)
    # Only if the password did not change meanwhile.
    await conn.execute(
        "UPDATE account SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
        new_hash,
        account_id,
        old,
    )


async def set_password(
    conn: Conn, account_id: str, password: str, *, settings: Settings | None = None
) -> None:
    """Replace the password (rules enforced) and end every session of the account."""
    settings = settings or get_settings()
    account = await get_account(conn, account_id)
    if account is None:
        raise IdentityError(Msg("No such account."))
    problem = passwords.password_problem(password, account.email)
    if problem:
        raise IdentityError(problem, "password")
    new_hash = await passwords.hash_password(settings, password)
    await conn.execute(
        "UPDATE account SET password_hash = $1, password_changed = $2 WHERE id = $3",
        new_hash,
        clock.now_us(),
        account_id,
    )
    await end_all_sessions(conn, account_id)


async def disable_account(conn: Conn, org_id: str, account_id: str) -> bool:
    """Disable an account of ``org_id`` and end its sessions; False when there is no such account."""
    found = await conn.fetchval(
        "UPDATE account SET disabled = $1 WHERE id = $2 AND org_id = $3 RETURNING id",
        True,
        account_id,
        org_id,
    )
    if found is None:
        return False
    forget_live_tokens()
    await end_all_sessions(conn, account_id)
    return True


async def enable_account(conn: Conn, org_id: str, account_id: str) -> bool:
    found = await conn.fetchval(
        "UPDATE account SET disabled = $1 WHERE id = $2 AND org_id = $3 RETURNING id",
        False,
        account_id,
        org_id,
    )
    return found is not None


async def end_all_sessions(conn: Conn, account_id: str, *, keep: str | None = None) -> None:
    """Sign the account out everywhere (except the session whose id hash is ``keep``)."""
    if keep is None:
        await conn.execute("DELETE FROM auth_session WHERE account_id = $1", account_id)
    else:
        await conn.execute(
            "DELETE FROM auth_session WHERE account_id = $1 AND id_hash <> $2", account_id, keep
        )


# --------------------------------------------------------------------------------------------------
# E-mailed links: verification, password reset, account set-up

SUBJECTS = {
    "verify": "Confirm your e-mail address for Housecall",
    "reset": "Reset your Housecall password",
    "setup": "Set up your Housecall account",
}
PATHS = {"verify": "/verify", "reset": "/password/reset", "setup": "/password/reset"}


async def send_link(conn: Conn, account: Account, purpose: str, outbox: Outbox, settings: Settings) -> str:
    """Issue a single-use link for ``purpose`` and queue the e-mail; returns the token (for tests).

    Only the token's SHA-256 is stored. A new link of the same purpose replaces older unused ones.
    The mail holds no health information: a sentence and the link.
    """
    token = secrets.token_urlsafe(32)
    now = clock.now_us()
    await conn.execute(
        "DELETE FROM email_token WHERE account_id = $1 AND purpose = $2 AND used IS NULL", account.id, purpose
    )
    await conn.execute(
        "INSERT INTO email_token (token_hash, account_id, purpose, created, expires, used) "
        "VALUES ($1, $2, $3, $4, $5, NULL)",
        sha256(token),
        account.id,
        purpose,
        now,
        now + TOKEN_LIFETIME_US[purpose],
    )
    link = f"{settings.public_url.rstrip('/')}{PATHS[purpose]}?token={quote(token)}"
    minutes = TOKEN_LIFETIME_US[purpose] // 60_000_000
    life = f"{minutes} minutes" if minutes < 120 else f"{minutes // 60} hours"
    lines = {
        "verify": "Please confirm that this is your e-mail address by opening this link:",
        "reset": "Someone (hopefully you) asked to reset your Housecall password. Choose a new one here:",
        "setup": "An account was created for you. Choose your password here:",
    }
    body = (
        f"Hello,\n\n{lines[purpose]}\n\n{link}\n\n"
        f"The link works once and expires in {life}. If you did not expect this e-mail, you can ignore it.\n"
    )
    outbox.add(Mail(account.email, SUBJECTS[purpose], body))
    return token


async def request_password_reset(
    conn: Conn, email: str, outbox: Outbox, *, settings: Settings | None = None
) -> None:
    """Queue a reset link when the address has an enabled account; do nothing otherwise.

    The caller answers the same either way ("if an account exists, we sent a link").
    """
    settings = settings or get_settings()
    account = await find_account_by_email(conn, email)
    if account is None or account.disabled:
        return
    await send_link(conn, account, "reset", outbox, settings)


async def peek_link(conn: Conn, token: str, purposes: Iterable[str]) -> Account | None:
    """The account a still-valid, unused link belongs to, without using it (to show the form)."""
    row = await conn.fetchrow(
        "SELECT account_id, purpose, expires, used FROM email_token WHERE token_hash = $1", sha256(token)
    )
    if row is None or row[1] not in set(purposes) or row[3] is not None or int(row[2]) <= clock.now_us():
        return None
    account = await get_account(conn, row[0])
    return None if account is None or account.disabled else account


async def consume_link(conn: Conn, token: str, purposes: Iterable[str]) -> tuple[Account, str] | None:
    """Use a link once: (account, purpose), or None when unknown, used, expired or of another kind."""
    allowed = list(purposes)
    marks = ", ".join(f"${i + 3}" for i in range(len(allowed)))
    row = await conn.fetchrow(
        f"UPDATE email_token SET used = $1 WHERE token_hash = $2 AND used IS NULL AND purpose IN ({marks}) "
        f"AND expires > $1 RETURNING account_id, purpose",
        clock.now_us(),
        sha256(token),
        *allowed,
    )
    if row is None:
        return None
    account = await get_account(conn, row[0])
    if account is None or account.disabled:
        return None
    return account, row[1]


async def reset_password_with_link(
    conn: Conn, token: str, password: str, *, settings: Settings | None = None
) -> Account | None:
    """Set a new password through a reset or set-up link; the link is used up, the address counts
    as verified (the person read the mail) and every session of the account ends.

    Raises ``IdentityError`` for a refused password *before* using the link, so the person can try
    another password with the same link. None when the link is not valid.
    """
    settings = settings or get_settings()
    account = await peek_link(conn, token, ("reset", "setup"))
    if account is None:
        return None
    problem = passwords.password_problem(password, account.email)
    if problem:
        raise IdentityError(problem, "password")
    used = await consume_link(conn, token, ("reset", "setup"))
    if used is None:
        return None
    await set_password(conn, account.id, password, settings=settings)
    await conn.execute("UPDATE account SET email_verified = $1 WHERE id = $2", True, account.id)
    return await get_account(conn, account.id)


async def verify_email(conn: Conn, token: str) -> Account | None:
    used = await consume_link(conn, token, ("verify",))
    if used is None:
        return None
    await conn.execute("UPDATE account SET email_verified = $1 WHERE id = $2", True, used[0].id)
    return await get_account(conn, used[0].id)


# --------------------------------------------------------------------------------------------------
# MFA: TOTP (RFC 6238) and recovery codes


def new_totp_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends


def totp_uri(email: str, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The 30-second step ``code`` belongs to, accepting one step of clock drift either way."""
    code = "".join(code.split())
    if not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    step = int(now // totp.interval)
    for candidate in (step, step - 1, step + 1):
        if secrets.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


async def confirm_totp_enrolment(conn: Conn, account_id: str, secret: str, code: str) -> list[str] | None:
    """Enrol the authenticator whose ``secret`` produced ``code``; returns the 10 recovery codes to
    show once (only their hashes are kept), or None when the code is wrong."""
    step = _matching_step(secret, code, clock.now())
    if step is None:
        return None
    await conn.execute(
        "UPDATE account SET totp_secret = $1, totp_last_step = $2 WHERE id = $3", secret, step, account_id
    )
    return await new_recovery_codes(conn, account_id)


async def check_totp(conn: Conn, account_id: str, code: str) -> bool:
    """True when ``code`` is current for the account and its step was not used before (a code seen
    over a shoulder or phished cannot be replayed)."""
    row = await conn.fetchrow("SELECT totp_secret, totp_last_step FROM account WHERE id = $1", account_id)
    if row is None or row[0] is None:
        return False
    step = _matching_step(row[0], code, clock.now())
    if step is None:
        return False
    # Compare-and-set: of two requests racing with the same code, one wins.
    won = await conn.fetchval(
        "UPDATE account SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1) "
        "RETURNING id",
        step,
        account_id,
    )
    return won is not None


def _recovery_hash(code: str) -> str:
    return sha256("".join(code.split()).replace("-", "").lower())


async def new_recovery_codes(conn: Conn, account_id: str) -> list[str]:
    """Replace the account's recovery codes with 10 new ones (50 random bits each)."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _code in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(alphabet) for _char in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    await conn.execute("DELETE FROM recovery_code WHERE account_id = $1", account_id)
    for code in codes:
        await conn.execute(
            "INSERT INTO recovery_code (account_id, code_hash, used) VALUES ($1, $2, NULL)",
            account_id,
            _recovery_hash(code),
        )
    return codes


async def use_recovery_code(conn: Conn, account_id: str, code: str) -> bool:
    used = await conn.fetchval(
        "UPDATE recovery_code SET used = $1 WHERE account_id = $2 AND code_hash = $3 AND used IS NULL RETURNING 1",
        clock.now_us(),
        account_id,
        _recovery_hash(code),
    )
    return used is not None


async def recovery_codes_left(conn: Conn, account_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM recovery_code WHERE account_id = $1 AND used IS NULL", account_id
        )
    )


async def reset_mfa(conn: Conn, org_id: str, account_id: str) -> bool:
    """Remove the account's authenticator and recovery codes (an admin's help for a lost phone);
    its sessions end, and a staff account must enrol again at its next sign-in."""
    found = await conn.fetchval(
        "UPDATE account SET totp_secret = NULL, totp_last_step = NULL WHERE id = $1 AND org_id = $2 RETURNING id",
        account_id,
        org_id,
    )
    if found is None:
        return False
    await conn.execute("DELETE FROM recovery_code WHERE account_id = $1", account_id)
    await end_all_sessions(conn, account_id)
    return True


# --------------------------------------------------------------------------------------------------
# Proxies: a patient's permission for a parent or caregiver

RELATIONSHIPS = {
    "parent": ("PRN", "parent"),
    "guardian": ("GUARD", "guardian"),
    "caregiver": ("CAREGIVER", "caregiver"),
    "spouse": ("SPS", "spouse"),
    "child": ("CHILD", "child"),
}
RELATIONSHIP_NAMES: dict[str, str] = {
    "parent": Msg("parent"),
    "guardian": Msg("guardian"),
    "caregiver": Msg("caregiver"),
    "spouse": Msg("spouse"),
    "child": Msg("child"),
}


def relationship_name(code: str) -> str:
    """A proxy's relationship to the patient in words, in the reader's language."""
    return _(RELATIONSHIP_NAMES.get(code, code))


@dataclass(frozen=True)
class ProxyGrant:
    id: str
    org_id: str
    proxy_account_id: str
    patient_id: str
    related_person_id: str | None
    relationship: str
    granted_by: str
    since: int
    until: int | None
    revoked: int | None

    def active(self, now_us: int) -> bool:
        return self.revoked is None and self.since <= now_us and (self.until is None or now_us < self.until)


GRANT_COLUMNS = "id, org_id, proxy_account_id, patient_id, related_person_id, relationship, granted_by, since, until, revoked"


def _grant(row: Sequence[Any]) -> ProxyGrant:
    return ProxyGrant(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], int(row[7]),
        None if row[8] is None else int(row[8]), None if row[9] is None else int(row[9]),
    )  # fmt: skip


async def grant_proxy(
    conn: Conn,
    proxy_account_id: str,
    patient_id: str,
    *,
    granted_by: str,
    relationship: str = "caregiver",
    until_us: int | None = None,
    settings: Settings | None = None,
) -> ProxyGrant:
    """Record the patient's permission for a proxy account to act for them, with a RelatedPerson
    resource describing the relationship. ``granted_by`` is the patient's account id (or
    "system:<who>" for an operator acting on a signed paper form)."""
    settings = settings or get_settings()
    proxy = await get_account(conn, proxy_account_id)
    if proxy is None or proxy.kind is not ActorKind.PROXY:
        raise IdentityError(Msg("Only a proxy account can act for a patient."), "proxy")
    if not await _resource_exists(conn, proxy.org_id, "Patient", patient_id):
        raise IdentityError(Msg("No Patient '%(id)s'.", id=patient_id), "patient")
    if relationship not in RELATIONSHIPS:
        raise IdentityError(
            Msg("Relationship is one of %(names)s.", names=", ".join(RELATIONSHIPS)), "relationship"
        )
    code, text = RELATIONSHIPS[relationship]
    related = {
        "resourceType": "RelatedPerson",
        "active": True,
        "patient": {"reference": f"Patient/{patient_id}"},
        "relationship": [
            {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": code}],
                "text": text,
            }
        ],
        "name": [{"text": proxy.display_name}],
        "telecom": [{"system": "email", "value": proxy.email}],
    }
    created = await ix.create(_ctx(conn, settings, proxy.org_id), "RelatedPerson", related)
    assert created.stored is not None
    grant_id = secrets.token_hex(8)
    await conn.execute(
        f"INSERT INTO proxy_grant ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        grant_id,
        proxy.org_id,
        proxy.id,
        patient_id,
        created.stored.res_id,
        relationship,
        granted_by,
        clock.now_us(),
        until_us,
    )
    row = await conn.fetchrow(f"SELECT {GRANT_COLUMNS} FROM proxy_grant WHERE id = $1", grant_id)
    assert row is not None
    return _grant(row)


async def revoke_proxy(conn: Conn, grant_id: str) -> bool:
    """End a grant now; the proxy's next request no longer acts for the patient."""
    found = await conn.fetchval(
        "UPDATE proxy_grant SET revoked = $1 WHERE id = $2 AND revoked IS NULL RETURNING id",
        clock.now_us(),
        grant_id,
    )
    return found is not None


async def proxy_grants(conn: Conn, proxy_account_id: str, *, active_only: bool = True) -> list[ProxyGrant]:
    rows = await conn.fetch(
        f"SELECT {GRANT_COLUMNS} FROM proxy_grant WHERE proxy_account_id = $1 ORDER BY since",
        proxy_account_id,
    )
    grants = [_grant(r) for r in rows]
    now = clock.now_us()
    return [g for g in grants if g.active(now)] if active_only else grants


async def accounts_for_patient(conn: Conn, org_id: str, patient_id: str) -> list[tuple[str, str]]:
    """(account id, e-mail) of everyone who reads ``patient_id``'s record in the portal: the
    patient's own enabled accounts, then the enabled proxies whose grant is active now. For telling
    them something happened (notifications carry no health information)."""
    rows = await conn.fetch(
        "SELECT id, email FROM account WHERE org_id = $1 AND patient_id = $2 AND kind = 'patient' "
        "AND NOT disabled ORDER BY id",
        org_id,
        patient_id,
    )
    proxies = await conn.fetch(
        "SELECT a.id, a.email FROM proxy_grant g JOIN account a ON a.id = g.proxy_account_id "
        "WHERE g.org_id = $1 AND g.patient_id = $2 AND g.revoked IS NULL AND g.since <= $3 "
        "AND (g.until IS NULL OR g.until > $3) AND NOT a.disabled ORDER BY a.id",
        org_id,
        patient_id,
        clock.now_us(),
    )
    seen: dict[str, str] = {}
    for r in [*rows, *proxies]:
        seen.setdefault(r[0], r[1])
    return list(seen.items())
