"""The one decision point: what an actor may read and write in the resource store.

Every interaction on the store (read, vread, search, history, create, update, patch, delete,
``_include``/``_revinclude``, operations, Bundle entries) asks an ``Access`` built for the acting
``Actor``. Rules, in order:

1. Organization: the store itself only sees the actor's organization (``Store(conn, org_id)``).
   The one crossing is a patient's Consent (decision 0010): kept in the patient's own
   organization, naming a clinician of another organization (their Practitioner) or another
   organization (its Organization resource: every clinician and nurse there), it lets them
   *read* the types it covers of that patient's record there, until it ends. Reads then also look
   in those organizations (``Store(…, also=…)``, ``search_foreign``) and decide on each resource
   found; writes never cross.
2. Role (or, for apps and devices, the SMART scopes of the token): which resource types and which
   interactions (c r u d s) the actor may use at all.
3. Patients: a resource in a patient compartment (R4 CompartmentDefinition, computed on write) is
   visible only when one of its patients is granted to the actor:
   - a patient: themself; a proxy: the patient they act for (from the session, never the request);
   - clinicians and nurses: the patients whose active CareTeam lists them as a participant, plus
     active Consents naming them or their organization, plus an open break-glass;
   - front desk, organization admins and privacy officers: every patient, for the administrative
     types of their role only; backend apps with ``system/`` scopes and the system: every patient.
   A resource in no patient compartment (Practitioner, Location, Slot …) is directory data, readable
   by everyone in the organization and written by administrators.

Denials of reads look exactly like missing resources (404); a search returns only what may be seen,
with the condition inside the same SQL so that counts and pages stay right (``r.org_id = mine AND
…`` OR ``r.org_id = theirs AND compartment patient IN (granted there)``). A write may not touch a
patient the actor is not granted, may not move a resource to another patient, and patients may not
write protected elements (``meta.security``, links between records). A write aimed at another
organization's resource that a Consent lets the actor read answers 403 (read-only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from housecall.access.actor import Actor, ActorKind, Role, system_actor
from housecall.core.db import Conn
from housecall.fhir.errors import FhirError, not_found
from housecall.fhir.indexing import COMPARTMENT_PATIENT, compartment_patients, date_bounds, extract_index
from housecall.fhir.store import Stored
from housecall.identity.clock import clock
from housecall.smart import scopes as smart_scopes

COMPARTMENT_TYPES = frozenset(COMPARTMENT_PATIENT)
# What front-desk staff work with: who the patient is, their appointments, coverage and bills.
ADMINISTRATIVE_TYPES = frozenset(
    {"Patient", "RelatedPerson", "Appointment", "AppointmentResponse", "Schedule", "Coverage", "Account",
     "Invoice", "ChargeItem", "Person"}
)  # fmt: skip
# Roles that work the administrative types for every patient, and write the directory
# (practitioners, locations, services, calendars).
ADMIN_ROLES = frozenset({Role.ORG_ADMIN, Role.FRONT_DESK})
# What privacy officers read for every patient: the administrative types, consents and audit events.
PRIVACY_TYPES = ADMINISTRATIVE_TYPES | {"AuditEvent", "Consent"}
# Types outside any patient compartment that can still carry anyone's health information (a
# Binary attachment, a stored document Bundle): only the system and backend services reach them;
# people get attachments through the domain services, which check whose they are.
# Payments (PaymentReconciliation, PaymentNotice) name no patient the compartment could place them
# in, yet say who paid which bill: billing reaches them after checking the Invoice is the reader's.
RESTRICTED_TYPES = frozenset({"Binary", "Bundle", "PaymentReconciliation", "PaymentNotice"})
# Types people never write: AuditEvents in the store come from other systems (backend services
# with system/ scopes). Housecall's own audit trail is not in the store at all (audit/).
READ_ONLY_TYPES = frozenset({"AuditEvent"})
# Elements a patient or proxy may not set or change (SECURITY.md row 5): security labels, links
# between records, who manages the record.
PATIENT_PROTECTED = {
    "*": ("meta.security",),
    "Patient": ("link", "managingOrganization", "generalPractitioner"),
}
# Types a patient (or a proxy for them) may write in their own record from an app or the portal.
PATIENT_WRITABLE = frozenset(
    {"Patient", "Observation", "QuestionnaireResponse", "Communication", "Consent", "DocumentReference",
     "Media", "Binary", "AllergyIntolerance", "Condition", "MedicationStatement", "FamilyMemberHistory",
     "Goal", "RelatedPerson"}
)  # fmt: skip
CLINICAL_ROLES = frozenset({Role.CLINICIAN, Role.NURSE, Role.RPM_NURSE, Role.INTERPRETER})

INTERACTION_CODES = {
    "read": "r", "vread": "r", "history-instance": "r", "search": "s", "history-type": "s",
    "history-system": "s", "create": "c", "update": "u", "patch": "u", "delete": "d",
}  # fmt: skip


def hidden(res_type: str, res_id: str) -> FhirError:
    """The answer to anything denied: the same 404 a missing resource gets."""
    return not_found(res_type, res_id)


def forbidden(interaction: str, res_type: str) -> FhirError:
    """An interaction the role or scopes never allow on the type: 403, whatever the id."""
    return FhirError(403, "forbidden", f"this sign-in may not {interaction} {res_type} resources")


@dataclass
class Grants:
    """The patients an actor may see, loaded once per request."""

    every_patient: bool = False
    patients: frozenset[str] = frozenset()
    # Consent-limited grants: patient -> the resource types the Consent covers (None: all types).
    limited: dict[str, frozenset[str] | None] = field(default_factory=dict)
    # Read grants in other organizations, from their patients' Consents: organization -> patient ->
    # the resource types covered (None: all types). Never merged with the grants above: they
    # apply to that organization's resources only.
    foreign: dict[str, dict[str, frozenset[str] | None]] = field(default_factory=dict)

    def patients_for(self, res_type: str) -> frozenset[str]:
        extra = {p for p, types in self.limited.items() if types is None or res_type in types}
        return self.patients | extra if extra else self.patients

    def foreign_patients_for(self, org_id: str, res_type: str) -> frozenset[str]:
        granted = self.foreign.get(org_id) or {}
        return frozenset(p for p, types in granted.items() if types is None or res_type in types)


class Access:
    """What one actor may do, for one request. Build with ``await Access.load(conn, actor)``."""

    def __init__(self, actor: Actor, grants: Grants) -> None:
        self.actor = actor
        self.grants = grants

    @classmethod
    async def load(cls, conn: Conn, actor: Actor, *, now: int | None = None) -> Access:
        return cls(actor, await _load_grants(conn, actor, now if now is not None else clock.now_us()))

    @classmethod
    def system(cls, org_id: str) -> Access:
        """Housecall itself acting in ``org_id`` (CLI imports, the demo loader, services setting
        up accounts): everything in that organization, nothing outside it."""
        return cls(system_actor(org_id), Grants(every_patient=True))

    @property
    def foreign_orgs(self) -> tuple[str, ...]:
        """The other organizations where a patient's Consent grants the actor part of a record:
        a read may look there too (``Store(…, also=…)``), and decides on each resource found."""
        return tuple(sorted(self.grants.foreign))

    # -- what kind of access ----------------------------------------------------------------------

    def _levels(self, res_type: str, code: str) -> tuple[bool, bool]:
        """(allowed at all, limited to the grants' patients) for this type and interaction."""
        actor = self.actor
        if actor.kind is ActorKind.SYSTEM:
            return True, False
        if actor.scopes is not None:  # a token: its scopes decide, on top of the actor's own limits
            if smart_scopes.permits(actor.scopes, "system", res_type, code):
                return actor.kind in (ActorKind.APP, ActorKind.DEVICE), actor.kind is ActorKind.DEVICE
            patient_level = actor.patient_id is not None and smart_scopes.permits(
                actor.scopes, "patient", res_type, code
            )
            if not patient_level and not smart_scopes.permits(actor.scopes, "user", res_type, code):
                return False, True
        return self._role_allows(res_type, code), True

    def _role_allows(self, res_type: str, code: str) -> bool:
        actor = self.actor
        roles = actor.roles
        if (code in "cud" and res_type in READ_ONLY_TYPES) or res_type in RESTRICTED_TYPES:
            return False
        in_compartment = res_type in COMPARTMENT_TYPES
        if actor.kind in (ActorKind.PATIENT, ActorKind.PROXY):
            return code in "rs" or (res_type in PATIENT_WRITABLE and in_compartment)
        if actor.kind is ActorKind.DEVICE:
            return res_type in ("Observation", "Device") and code in "crus"
        if actor.kind is ActorKind.APP:
            return False  # an app acts through its scopes alone (handled above)
        if not in_compartment:
            return code in "rs" or bool(roles & ADMIN_ROLES)
        if roles & CLINICAL_ROLES or actor.kind is ActorKind.PRACTITIONER:
            return True
        return self._administers(res_type, code)

    def _administers(self, res_type: str, code: str) -> bool:
        """Whether the actor's staff role works ``res_type`` for every patient of the organization."""
        roles = self.actor.roles
        if res_type in ADMINISTRATIVE_TYPES and roles & ADMIN_ROLES:
            return True
        return Role.PRIVACY_OFFICER in roles and code in "rs" and res_type in PRIVACY_TYPES

    def _visible_patients(self, res_type: str, limited: bool) -> frozenset[str] | None:
        """The patients whose ``res_type`` resources the actor may see; None: every patient."""
        if not limited or (self.grants.every_patient and self._administers(res_type, "r")):
            return None
        return self.grants.patients_for(res_type)

    # -- reads --------------------------------------------------------------------------------------

    def reads_whole_organization(self, res_type: str | None) -> bool:
        """Whether the actor may search every resource of the type (every type when None), every
        patient included: the system, backend apps and administrative roles on their types."""
        actor = self.actor
        if actor.kind is ActorKind.SYSTEM:
            return True
        if res_type is None:
            return actor.kind is ActorKind.APP and smart_scopes.permits(actor.scopes, "system", "*", "s")
        allowed, limited = self._levels(res_type, "s")
        return allowed and (
            res_type not in COMPARTMENT_TYPES or self._visible_patients(res_type, limited) is None
        )

    def check_interaction(self, interaction: str, res_type: str) -> None:
        """Refuse an interaction the actor's role or scopes never allow on the type: 403, the same
        for every id (the types and interactions are public in the CapabilityStatement)."""
        if not self._levels(res_type, INTERACTION_CODES[interaction])[0]:
            raise forbidden(interaction, res_type)

    def can_read(self, stored: Stored, interaction: str = "read") -> bool:
        if stored.org_id is not None and stored.org_id != self.actor.org_id:
            return self._can_read_foreign(stored, INTERACTION_CODES[interaction])
        allowed, limited = self._levels(stored.res_type, INTERACTION_CODES[interaction])
        if not allowed:
            return False
        if stored.res_type not in COMPARTMENT_TYPES:
            return True
        visible = self._visible_patients(stored.res_type, limited)
        if visible is None:
            return True
        # A deleted version has no content to say whose it was: only organization-wide readers see it.
        return stored.content is not None and bool(patients_of(stored) & visible)

    def _can_read_foreign(self, stored: Stored, code: str) -> bool:
        """Another organization's resource: only a read, only in the record of a patient whose
        Consent there grants the actor this type, and only what the role or scopes allow anyway."""
        assert stored.org_id is not None
        if code not in "rs" or stored.res_type not in COMPARTMENT_TYPES or stored.content is None:
            return False
        if not self._levels(stored.res_type, code)[0]:
            return False
        return bool(patients_of(stored) & self.grants.foreign_patients_for(stored.org_id, stored.res_type))

    def admit(self, resources: Iterable[Stored], interaction: str = "read") -> list[Stored]:
        return [s for s in resources if self.can_read(s, interaction)]

    def search_restriction(self, res_type: str) -> Callable[[Any], str | None]:
        """The SQL condition on ``r`` (a search's resource alias) that keeps what may be seen."""

        def restrict(builder: Any) -> str | None:
            allowed, limited = self._levels(res_type, "s")
            if not allowed:
                return "1 = 0"
            if res_type not in COMPARTMENT_TYPES:
                return None
            visible = self._visible_patients(res_type, limited)
            if visible is None:
                return None
            if not visible:
                return "1 = 0"
            ids = builder.sql.many(sorted(visible))
            return (
                "EXISTS (SELECT 1 FROM compartment c WHERE c.res_type = r.res_type AND c.res_id = r.res_id "
                f"AND c.patient_id IN ({ids}))"
            )

        return restrict

    def search_foreign(self, res_type: str) -> Callable[[Any], str | None]:
        """The SQL condition on ``r`` for what other organizations' Consents grant the actor of
        ``res_type`` (OR-ed with the organization's own condition), or None when they grant none."""

        def also(builder: Any) -> str | None:
            if not self.grants.foreign or res_type not in COMPARTMENT_TYPES:
                return None
            if not self._levels(res_type, "s")[0]:
                return None
            parts = []
            for org_id in self.foreign_orgs:
                patients = self.grants.foreign_patients_for(org_id, res_type)
                if patients:
                    parts.append(
                        f"(r.org_id = {builder.sql.p(org_id)} AND EXISTS (SELECT 1 FROM compartment c "
                        "WHERE c.res_type = r.res_type AND c.res_id = r.res_id "
                        f"AND c.patient_id IN ({builder.sql.many(sorted(patients))})))"
                    )
            return " OR ".join(parts) or None

        return also

    def check_search_patients(self, res_type: str, referenced: Iterable[str]) -> None:
        """A search naming a patient the actor may not see (``subject=Patient/B``) answers as a
        read of that patient would: 404, whether or not the patient exists."""
        visible = self._visible_patients(res_type, self._levels(res_type, "s")[1])
        if visible is None:
            return
        for patient_id in referenced:
            if patient_id not in visible and not any(
                patient_id in self.grants.foreign_patients_for(org_id, res_type)
                for org_id in self.grants.foreign
            ):
                raise hidden("Patient", patient_id)

    # -- writes -------------------------------------------------------------------------------------

    def check_write(
        self,
        interaction: str,
        res_type: str,
        res_id: str,
        new: dict[str, Any] | None,
        current: Stored | None,
        new_patients: set[str] | None = None,
    ) -> None:
        """Refuse a write the actor may not make. ``current`` is the stored version being replaced
        or deleted (None for a create); ``new`` the resource to store (None for a delete)."""
        code = INTERACTION_CODES[interaction]
        allowed, limited = self._levels(res_type, code)
        if current is not None and current.content is not None and not self.can_read(current):
            raise hidden(res_type, res_id)
        if not allowed:  # (what the actor may not even read was refused as unknown just above)
            raise forbidden(interaction, res_type)
        if new is not None and self.actor.kind in (ActorKind.PATIENT, ActorKind.PROXY):
            _check_protected(res_type, new, current)
        if res_type not in COMPARTMENT_TYPES:
            return
        old_patients = patients_of(current) if current is not None and current.content is not None else None
        if new is not None:
            patients = new_patients if new_patients is not None else extract_index(new).patients
            if (
                old_patients is not None
                and patients != old_patients
                and self.actor.kind is not ActorKind.SYSTEM
            ):
                raise FhirError(
                    422, "business-rule", f"{res_type}/{res_id} cannot be moved to another patient's record"
                )
            visible = self._visible_patients(res_type, limited)
            if visible is not None:
                if not patients and self.actor.kind in (ActorKind.PATIENT, ActorKind.PROXY, ActorKind.DEVICE):
                    raise FhirError(403, "forbidden", f"this {res_type} must name the patient it is about")
                for p in sorted(patients - visible):
                    raise hidden("Patient", p)


def patients_of(stored: Stored | None) -> set[str]:
    """The patients whose record a stored version is in, read from its JSON (no query). Parsed
    with plain orjson: references are all that is read, decimals' text does not matter here."""
    if stored is None or stored.content is None:
        return set()
    if stored.patients is not None:
        return set(stored.patients)
    return compartment_patients(orjson.loads(stored.content))


def _get_path(resource: dict[str, Any], path: str) -> Any:
    node: Any = resource
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _check_protected(res_type: str, new: dict[str, Any], current: Stored | None) -> None:
    old = current.resource() if current is not None and current.content is not None else {}
    for path in (*PATIENT_PROTECTED["*"], *PATIENT_PROTECTED.get(res_type, ())):
        if _get_path(new, path) != _get_path(old, path):
            raise FhirError(
                403,
                "forbidden",
                f"{res_type}.{path} is managed by the care team",
                expression=f"{res_type}.{path}",
            )


# -- loading grants ---------------------------------------------------------------------------------


async def _load_grants(conn: Conn, actor: Actor, now: int) -> Grants:
    if actor.kind in (ActorKind.SYSTEM, ActorKind.APP):
        return Grants(every_patient=True)
    if actor.kind in (ActorKind.PATIENT, ActorKind.PROXY, ActorKind.DEVICE):
        return Grants(patients=frozenset({actor.patient_id}) if actor.patient_id else frozenset())
    every = bool(actor.roles & {Role.FRONT_DESK, Role.ORG_ADMIN, Role.PRIVACY_OFFICER})
    patients: set[str] = set()
    limited: dict[str, frozenset[str] | None] = {}
    foreign: dict[str, dict[str, frozenset[str] | None]] = {}
    if actor.fhir_user and "/" in actor.fhir_user:
        member_type, member_id = actor.fhir_user.split("/", 1)
        patients |= await care_team_patients(conn, actor.org_id, member_type, member_id)
    if (actor.fhir_user and "/" in actor.fhir_user) or is_clinical(actor):
        for org_id, patient_id, types in await consented_patients(conn, actor, now):
            if org_id == actor.org_id:
                if patient_id not in patients:
                    _merge(limited, patient_id, types)
            else:
                _merge(foreign.setdefault(org_id, {}), patient_id, types)
    if actor.account_id:
        patients |= await break_glass_patients(conn, actor.account_id, now)
    return Grants(every_patient=every, patients=frozenset(patients), limited=limited, foreign=foreign)


def _merge(grants: dict[str, frozenset[str] | None], patient_id: str, types: frozenset[str] | None) -> None:
    """Add a Consent's types to a patient's grant (None, all types, absorbs any list)."""
    before = grants.get(patient_id, frozenset())
    grants[patient_id] = None if types is None or before is None else before | types


def is_clinical(actor: Actor) -> bool:
    """Clinicians, nurses and interpreters: whom a Consent naming their organization grants."""
    return actor.kind is ActorKind.PRACTITIONER or bool(actor.roles & CLINICAL_ROLES)


async def care_team_patients(conn: Conn, org_id: str, member_type: str, member_id: str) -> set[str]:
    """Patients whose CareTeam (not inactive or entered in error) lists the member as a participant."""
    rows = await conn.fetch(
        "SELECT DISTINCT p.target_id FROM sp_reference m "
        "JOIN resource ct ON ct.res_type = 'CareTeam' AND ct.res_id = m.res_id AND ct.org_id = $1 "
        "AND NOT ct.deleted "
        # CareTeam's ``patient`` is stored as its ``subject`` rows of a Patient (SUBSET_ALIASES).
        "JOIN sp_reference p ON p.res_type = 'CareTeam' AND p.res_id = m.res_id AND p.param = 'subject' "
        "AND p.target_type = 'Patient' "
        "WHERE m.res_type = 'CareTeam' AND m.param = 'participant' AND m.target_type = $2 AND m.target_id = $3 "
        "AND NOT EXISTS (SELECT 1 FROM sp_token s WHERE s.res_type = 'CareTeam' AND s.res_id = m.res_id "
        "AND s.param = 'status' AND s.code IN ('inactive', 'entered-in-error', 'proposed', 'suspended'))",
        org_id,
        member_type,
        member_id,
    )
    return {r[0] for r in rows if r[0]}


# The Consents whose provision.actor names the actor ($1/$2: Practitioner/…), or names the
# organization the actor acts in ($3; its Organization resource, ``organization.fhir_id``), in any
# organization - the local ones and those of another organization's patients in one statement, one
# index seek per name - each with its patient when that is a Patient of the organization holding
# the Consent (looked up only for the Consents found; CROSS JOIN fixes SQLite's join order).
_CONSENTS_NAMING = (
    "SELECT c.org_id, c.content, a.target_type, a.target_id, "
    "(SELECT p.res_id FROM compartment cc CROSS JOIN resource p WHERE cc.res_type = 'Consent' "
    "AND cc.res_id = a.res_id AND p.res_type = 'Patient' AND p.res_id = cc.patient_id AND p.org_id = c.org_id "
    "AND NOT p.deleted) "
    "FROM sp_reference a JOIN resource c ON c.res_type = 'Consent' AND c.res_id = a.res_id AND NOT c.deleted "
    "WHERE a.res_type = 'Consent' AND a.param = 'actor' AND "
)
_TENANT = "(SELECT o.fhir_id FROM organization o WHERE o.id = $3)"
_NAMING_USER = "a.target_id = $1 AND a.target_type = $2"
_NAMING_EITHER = (
    f"a.target_id IN ($1, {_TENANT}) AND ((a.target_id = $1 AND a.target_type = $2) "
    f"OR (a.target_id = {_TENANT} AND a.target_type = 'Organization'))"
)
_NAMING_TENANT = f"a.target_id = {_TENANT} AND a.target_type = 'Organization'".replace("$3", "$1")


async def consented_patients(
    conn: Conn, actor: Actor, now: int
) -> list[tuple[str, str, frozenset[str] | None]]:
    """(organization, patient, resource types or None for all) of each active Consent granting
    the actor part of a patient's record.

    A Consent grants when: status active; provision.type permit; provision.actor names the actor's
    ``fhirUser`` or, for clinicians and nurses, the Organization resource of the organization they
    act in (decision 0010); provision.period, if any, covers now. Its provision.class codes
    (resource types) narrow what it covers. It counts only in the organization that holds it, and
    only when its patient is a Patient of that organization: nobody grants access to a record that
    is not theirs, and no organization to another's patients. Evaluated on every request (one
    query), so a revocation (status inactive, a past period end, a deletion) is effective on the
    next one.
    """
    user = actor.fhir_user if actor.fhir_user and "/" in actor.fhir_user else None
    member_type, member_id = user.split("/", 1) if user is not None else ("", "")
    if user is not None and is_clinical(actor):
        rows = await conn.fetch(_CONSENTS_NAMING + _NAMING_EITHER, member_id, member_type, actor.org_id)
    elif user is not None:
        rows = await conn.fetch(_CONSENTS_NAMING + _NAMING_USER, member_id, member_type)
    elif is_clinical(actor):  # a nurse with no Practitioner resource: their organization only
        rows = await conn.fetch(_CONSENTS_NAMING + _NAMING_TENANT, actor.org_id)
    else:
        return []
    out: list[tuple[str, str, frozenset[str] | None]] = []
    for org_id, content, target_type, target_id, patient_id in rows:
        grant = consent_grant(orjson.loads(bytes(content)), f"{target_type}/{target_id}", now)
        if grant is not None and grant[0] == patient_id:  # (None: not a Patient of that organization)
            out.append((org_id, *grant))
    return out


def consent_grant(
    consent: dict[str, Any], actor_ref: str, now: int
) -> tuple[str, frozenset[str] | None] | None:
    """The (patient, types) a Consent grants whoever ``actor_ref`` (``Practitioner/…``,
    ``Organization/…``) stands for at ``now`` (µs), or None."""
    if consent.get("status") != "active":
        return None
    patient_ref = (consent.get("patient") or {}).get("reference") or ""
    if not patient_ref.startswith("Patient/"):
        return None
    provision = consent.get("provision") or {}
    if provision.get("type", "permit") != "permit":
        return None
    actors = [(a.get("reference") or {}).get("reference") for a in provision.get("actor") or []]
    if actor_ref not in actors:
        return None
    period = provision.get("period") or {}
    if not _in_period(period, now):
        return None
    classes = [
        c["code"]
        for c in provision.get("class") or []
        if isinstance(c, dict) and isinstance(c.get("code"), str)
    ]
    return patient_ref[len("Patient/") :], (frozenset(classes) if classes else None)


def _in_period(period: dict[str, Any], now: int) -> bool:
    try:
        if isinstance(period.get("start"), str) and date_bounds(period["start"])[0] > now:
            return False
        if isinstance(period.get("end"), str) and date_bounds(period["end"])[1] < now:
            return False
    except ValueError:
        return False  # a malformed period grants nothing
    return True


async def break_glass_patients(conn: Conn, account_id: str, now: int) -> set[str]:
    """Patients whose record the account opened in an emergency and that is still open."""
    rows = await conn.fetch(
        "SELECT patient_id FROM break_glass WHERE account_id = $1 AND ends > $2 AND started <= $2 AND closed IS NULL",
        account_id,
        now,
    )
    return {r[0] for r in rows}
