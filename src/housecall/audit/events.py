"""AuditEvents in the shape of IHE Basic Audit Log Patterns (BALP), FHIR R4.

https://profiles.ihe.net/ITI/BALP/ - one event per patient a request touched ("patient-centric"
events), the user and the app as agents, Housecall as the source, the patient, the resource and
the query as entities. What never goes in: a token or session secret (only the opaque id the
``Actor`` carries, hashed when it looks like more than an id) and, for searches, the values of
parameters that can identify a person (names, addresses, birth dates, identifiers…) - the query
entity keeps the parameter names and the values that are codes, references and paging.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import orjson

from housecall.access.actor import Actor, ActorKind
from housecall.core.instants import utc_instant

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
NETWORK_IP = "2"
ACCOUNT_SYSTEM = "urn:housecall:account"
CLIENT_SYSTEM = "urn:housecall:oauth-client"
ROLE_SYSTEM = "urn:housecall:role"
KIND_SYSTEM = "urn:housecall:actor-kind"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
NODE = socket.gethostname()


class Outcome(StrEnum):
    """AuditEvent.outcome (R4): denied and not-found are minor failures, as BALP records them."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"  # denied, not found, refused by validation
    SERIOUS_FAILURE = "8"  # the request failed on our side
    MAJOR_FAILURE = "12"


class Action(StrEnum):
    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


# The FHIR interaction (http://hl7.org/fhir/restful-interaction) and the action BALP pairs with it:
# searches and operations are Execute, reads and history are Read.
ACTIONS: dict[str, Action] = {
    "read": Action.READ,
    "vread": Action.READ,
    "history": Action.READ,
    "history-instance": Action.READ,
    "history-type": Action.READ,
    "history-system": Action.READ,
    "capabilities": Action.READ,
    "search": Action.EXECUTE,
    "search-type": Action.EXECUTE,
    "search-system": Action.EXECUTE,
    "operation": Action.EXECUTE,
    "batch": Action.EXECUTE,
    "transaction": Action.EXECUTE,
    "create": Action.CREATE,
    "update": Action.UPDATE,
    "patch": Action.UPDATE,
    "delete": Action.DELETE,
}
_PROFILES = {
    Action.CREATE: "Create",
    Action.READ: "Read",
    Action.UPDATE: "Update",
    Action.DELETE: "Delete",
    Action.EXECUTE: "Query",
}

# Search parameters whose values are kept in the recorded query: result control, ids, references,
# codes, statuses and clinical dates - what an auditor needs to see what was asked, none of which
# names a person. Every other value (name, family, address, phone, email, birthdate, identifier,
# text…) is recorded as "*". Credentials are dropped whole.
KEPT_VALUES = frozenset(
    [
        "patient",
        "subject",
        "encounter",
        "code",
        "category",
        "status",
        "date",
        "type",
        "performer",
        "practitioner",
        "organization",
        "context",
        "intent",
        "based-on",
        "part-of",
        "focus",
        "requester",
        "author",
        "service-provider",
        "location",
        "clinical-status",
        "verification-status",
        "value-quantity",
        "component-code",
        "combo-code",
        "issued",
        "period",
        "onset-date",
        "abatement-date",
        "authored",
        "effective",
    ]
)
# Result controls and ids; not _content, _text or _filter, which hold free text.
KEPT_CONTROLS = frozenset(
    [
        "_id",
        "_count",
        "_offset",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_lastUpdated",
        "_type",
        "_since",
        "_at",
        "_list",
        "_profile",
        "_security",
        "_tag",
        "_source",
        "_include:iterate",
        "_revinclude:iterate",
    ]
)
DROPPED = frozenset(
    [
        "access_token",
        "token",
        "refresh_token",
        "id_token",
        "client_secret",
        "client_assertion",
        "assertion",
        "password",
        "code_verifier",
        "_format",
        "_pretty",
    ]
)


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """What was asked, described without HTTP objects (the API, the pages and jobs all build it).

    ``interaction`` is the FHIR restful-interaction code; ``query`` the search parameters as
    (name, value) pairs - they are filtered before they are recorded.
    """

    interaction: str
    res_type: str | None = None
    res_id: str | None = None
    version: str | None = None
    operation: str | None = None  # "$everything", "$validate", …
    query: Sequence[tuple[str, str]] = ()
    address: str | None = None  # the client's network address


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One AuditEvent ready to store, with the columns the queries use."""

    org_id: str
    recorded: int  # µs since the epoch, UTC
    patient_id: str | None
    agent: str | None
    event: bytes
    # Whether the request should wait for this event's commit before it answers: writes, denials
    # and failures do; a successful read or search need not (AuditSink, decision 0007).
    urgent: bool = True


def recorded_instant(us: int) -> str:
    return utc_instant(us, 6)


def agent_key(actor: Actor) -> str:
    """The short name of the requesting agent, as stored in ``audit_log.agent``."""
    if actor.fhir_user:
        return actor.fhir_user
    if actor.account_id:
        return f"account/{actor.account_id}"
    if actor.client_id:
        return f"client/{actor.client_id}"
    return "system"


def redacted_query(res_type: str | None, query: Iterable[tuple[str, str]]) -> str:
    """The query as recorded: credentials dropped, identifying values replaced by ``*``."""
    kept: list[tuple[str, str]] = []
    for name, value in query:
        base = name.split(":", 1)[0]
        if base in DROPPED:
            continue
        last = base.rsplit(".", 1)[-1]  # a chain (subject.name) is judged by its last parameter
        keep = (
            base in KEPT_CONTROLS
            # _has:Observation:patient:code - judged by the parameter it ends with
            or (base == "_has" and name.rsplit(":", 1)[-1] in KEPT_VALUES)
            or (last in KEPT_VALUES and base.split(".", 1)[0] in KEPT_VALUES)
        )
        kept.append((name, value if keep else "*"))
    return f"{res_type or ''}?{urlencode(kept)}"


def _session_ref(session_id: str) -> str:
    # The Actor carries an opaque id, never the secret; if something longer arrives (a JWT, a
    # cookie value), record only a digest so the trail can never replay it.
    if len(session_id) <= 64 and "." not in session_id:
        return session_id
    return "sha256:" + hashlib.sha256(session_id.encode()).hexdigest()[:32]


@lru_cache(maxsize=4096)
def _agents(actor: Actor, address: str | None) -> list[dict[str, Any]]:
    """The agents of an actor at an address; cached (the same few actors make most requests),
    so callers must not change what it returns."""
    roles: list[dict[str, Any]] = [{"coding": [{"system": KIND_SYSTEM, "code": actor.kind.value}]}]
    roles += [{"coding": [{"system": ROLE_SYSTEM, "code": r.value}]} for r in sorted(actor.roles)]
    who: dict[str, Any] = {}
    if actor.fhir_user:
        who["reference"] = actor.fhir_user
    if actor.account_id:
        who["identifier"] = {"system": ACCOUNT_SYSTEM, "value": actor.account_id}
    human = actor.kind in (ActorKind.PATIENT, ActorKind.PROXY, ActorKind.PRACTITIONER, ActorKind.STAFF)
    agents: list[dict[str, Any]] = []
    app = {"system": CLIENT_SYSTEM, "value": actor.client_id} if actor.client_id else None
    if human or actor.kind == ActorKind.DEVICE or not app:
        if not who:
            who = (
                {"display": "Housecall"} if actor.kind == ActorKind.SYSTEM else {"display": actor.kind.value}
            )
        user: dict[str, Any] = {
            "type": {"coding": [{"system": SECURITY_ROLE, "code": "humanuser", "display": "human user"}]}
            if human
            else {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
            "role": roles,
            "who": who,
            "requestor": True,
        }
        if actor.session_id:
            user["policy"] = [_session_ref(actor.session_id)]
        if address:
            user["network"] = {"address": address, "type": NETWORK_IP}
        agents.append(user)
    if app:
        # BALP: the client application is its own agent; it is the requestor when no person is.
        client: dict[str, Any] = {
            "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"identifier": app},
            "requestor": not agents,
        }
        if not agents:
            client["role"] = roles
            if actor.session_id:
                client["policy"] = [_session_ref(actor.session_id)]
        if address:
            client["network"] = {"address": address, "type": NETWORK_IP}
        agents.append(client)
    return agents


def _with_purpose(agents: list[dict[str, Any]], purpose: str) -> list[dict[str, Any]]:
    reason = [{"coding": [{"system": PURPOSE_SYSTEM, "code": purpose}]}]
    return [{**a, "purposeOfUse": reason} if a["requestor"] else a for a in agents]


def event_for(
    actor: Actor,
    request: AuditRequest,
    outcome: Outcome,
    *,
    patient_id: str | None = None,
    what: Sequence[str] = (),
    action: Action | None = None,
    recorded: int | None = None,
    purpose: str | None = None,
) -> dict[str, Any]:
    """One BALP AuditEvent (a dict) for ``actor`` doing ``request`` about one patient (or none).

    ``what`` lists the resources acted on as relative references (``Observation/1/_history/2``);
    searches pass none - their query entity says what was asked. ``purpose`` is the requesting
    agent's purpose of use (v3-ActReason: ``ETREAT`` for break-glass access, ``TREAT``, …).
    """
    act = action or ACTIONS.get(request.interaction, Action.EXECUTE)
    recorded = recorded if recorded is not None else time.time_ns() // 1000
    entities: list[dict[str, Any]] = []
    if patient_id is not None:
        entities.append({
            "what": {"reference": f"Patient/{patient_id}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        })  # fmt: skip
    for ref in what:
        entities.append({
            "what": {"reference": ref},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        })  # fmt: skip
    if request.query or request.interaction.startswith("search"):
        q = redacted_query(request.res_type, request.query)
        entities.append({
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": base64.b64encode(q.encode()).decode(),
        })  # fmt: skip
    elif not what and request.res_type:
        ref = request.res_type + (f"/{request.res_id}" if request.res_id else "")
        if request.res_id and request.version:
            ref += f"/_history/{request.version}"
        entities.append({
            "what": {"reference": ref},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        })  # fmt: skip
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": uuid.uuid4().hex,
        "meta": {"profile": [f"{BALP}IHE.BasicAudit.{'Patient' if patient_id else ''}{_PROFILES[act]}"]},
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": INTERACTION, "code": request.interaction}],
        "action": act.value,
        "recorded": recorded_instant(recorded),
        "outcome": outcome.value,
        "agent": _agents(actor, request.address)
        if purpose is None
        else _with_purpose(_agents(actor, request.address), purpose),
        "source": {
            "site": actor.org_id,
            "observer": {"display": "Housecall", "identifier": {"value": NODE}},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    }
    if request.operation:
        event["subtype"].append({"system": "urn:housecall:operation", "code": request.operation})
    return event


def entries_for(
    actor: Actor,
    request: AuditRequest,
    outcome: Outcome,
    *,
    patient_ids: Iterable[str] = (),
    what: Sequence[str] = (),
    action: Action | None = None,
    purpose: str | None = None,
    org_id: str | None = None,
) -> list[AuditEntry]:
    """The events to store for one request: one per patient it touched (BALP's patient-centric
    events, so "who looked at my record" is one index range), or one without a patient.

    They go to the trail of ``org_id`` when given - the patients' organization, when the actor read
    another organization's record through its patient's Consent (decision 0010) - else to the
    actor's; ``source.site`` names the organization the request was made in either way."""
    recorded = time.time_ns() // 1000
    agent = agent_key(actor)
    patients: list[str | None] = list(dict.fromkeys(patient_ids)) or [None]
    act = action or ACTIONS.get(request.interaction, Action.EXECUTE)
    urgent = (
        outcome != Outcome.SUCCESS
        or act in (Action.CREATE, Action.UPDATE, Action.DELETE)
        or request.interaction in ("batch", "transaction")
    )
    return [
        AuditEntry(
            org_id or actor.org_id,
            recorded,
            pid,
            agent,
            orjson.dumps(
                event_for(
                    actor,
                    request,
                    outcome,
                    patient_id=pid,
                    what=what,
                    action=action,
                    recorded=recorded,
                    purpose=purpose,
                )
            ),
            urgent,
        )
        for pid in patients
    ]


# A resource a request acted on: (the organization whose it is, None for the actor's own; its
# relative reference with version; the patients whose record it is).
AuditRef = tuple[str | None, str, frozenset[str]]
# How many resources a request remembers for its events, and how many one event names.
MAX_AUDIT_REFS = 1000
MAX_EVENT_REFS = 50


def entries_for_touched(
    actor: Actor,
    request: AuditRequest,
    outcome: Outcome,
    touched: dict[str, str | None],
    refs: Sequence[AuditRef],
) -> list[AuditEntry]:
    """The events for a request that touched ``touched`` (patient -> the organization whose record
    it is, None for the actor's own) and acted on ``refs``: each patient's event goes to the trail
    of the organization whose record it is (another organization's, for a record read through its
    patient's Consent), naming that patient's resources there and those of no patient - not other
    patients' (their own events name them); a refused or failed request names none."""
    by_org: dict[str | None, list[str]] = {}
    for patient_id, org in touched.items():
        by_org.setdefault(org, []).append(patient_id)
    entries: list[AuditEntry] = []
    for org, patient_ids in list(by_org.items()) or [(None, [])]:
        if outcome is not Outcome.SUCCESS:
            entries += entries_for(actor, request, outcome, patient_ids=patient_ids, org_id=org)
            continue
        shared: list[str] = []
        mine: dict[str, list[str]] = {}
        for ref_org, ref, whose in refs:
            if ref_org != org:
                continue
            if not whose:
                shared.append(ref)
            for p in whose:
                mine.setdefault(p, []).append(ref)
        if not patient_ids:
            entries += entries_for(actor, request, outcome, what=shared[:MAX_EVENT_REFS], org_id=org)
            continue
        for pid in patient_ids:
            what = (mine.get(pid, []) + shared)[:MAX_EVENT_REFS]
            entries += entries_for(actor, request, outcome, patient_ids=[pid], what=what, org_id=org)
    return entries
