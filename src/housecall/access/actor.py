"""Who is acting: the one value every access decision and every audit event starts from.

Sign-in sessions (``identity``) and OAuth/SMART tokens build an ``Actor``; the access path and the
audit trail read it; nothing downstream looks at cookies or tokens again. The patient an actor may
act for always comes from here (the session or the token), never from the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActorKind(StrEnum):
    PATIENT = "patient"  # a patient acting for themself (fhir_user Patient/…)
    PROXY = "proxy"  # a parent or caregiver acting for a patient who granted it (RelatedPerson/…)
    PRACTITIONER = "practitioner"  # a clinician (Practitioner/… with PractitionerRoles)
    STAFF = "staff"  # front desk, nurse, RPM nurse, interpreter, organization admin
    DEVICE = "device"  # a home device or gateway (Device/…), backend-service token
    APP = "app"  # a backend service or integration acting for itself (system/ scopes)
    SYSTEM = "system"  # Housecall itself: the CLI, jobs, the demo loader - never an HTTP caller
    ANONYMOUS = "anonymous"  # no valid credentials: only ever the agent of a refused request's audit event


class Role(StrEnum):
    CLINICIAN = "clinician"
    FRONT_DESK = "front_desk"
    NURSE = "nurse"
    RPM_NURSE = "rpm_nurse"
    INTERPRETER = "interpreter"
    ORG_ADMIN = "org_admin"
    PRIVACY_OFFICER = "privacy_officer"


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    org_id: str  # the organization (tenant) the actor acts in; no query crosses it
    account_id: str | None = None  # the signed-in account; None for a backend client or the system
    roles: frozenset[Role] = frozenset()
    fhir_user: str | None = None  # "Patient/p1", "Practitioner/d1", "RelatedPerson/r1", "Device/x"
    # The patient whose record is in context: the patient themself, the patient a proxy switched to,
    # or a SMART launch's patient. Always set from the session or the token.
    patient_id: str | None = None
    client_id: str | None = None  # the OAuth client acting, None for a page session
    # SMART scopes granted to the token ("patient/Observation.rs", "user/*.cruds", "system/…");
    # None for a page session, whose limits are the role's alone.
    scopes: frozenset[str] | None = None
    session_id: str | None = None  # opaque id of the session or token (never the secret), for audit

    @property
    def is_staff_side(self) -> bool:
        return self.kind in (ActorKind.PRACTITIONER, ActorKind.STAFF)


def system_actor(org_id: str) -> Actor:
    """Housecall acting on its own behalf (CLI, jobs, demo loader)."""
    return Actor(ActorKind.SYSTEM, org_id)
