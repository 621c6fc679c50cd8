"""The AuditEvent shape (IHE BALP, R4): agents, source, entities; no tokens, no identifying values."""

from __future__ import annotations

import base64

import orjson
import pytest

from housecall.access.actor import Actor, ActorKind, Role
from housecall.audit.events import (
    Action,
    AuditRequest,
    Outcome,
    entries_for,
    event_for,
    redacted_query,
)

CANARY = "Zyxwvut-Canary-Qqq"
CLINICIAN = Actor(
    ActorKind.PRACTITIONER, "org-a", account_id="acct-7", roles=frozenset({Role.CLINICIAN}),
    fhir_user="Practitioner/d1", client_id="smart-app-1", scopes=frozenset({"user/*.rs"}),
    session_id="tok-123",
)  # fmt: skip


def _entity(event: dict, role: str) -> list[dict]:
    return [e for e in event["entity"] if e["role"]["code"] == role]


def test_read_event_names_user_app_source_patient_and_resource() -> None:
    request = AuditRequest("read", "Observation", "o1", address="10.0.0.9")
    ev = event_for(CLINICIAN, request, Outcome.SUCCESS, patient_id="p1", what=["Observation/o1/_history/3"])
    assert ev["resourceType"] == "AuditEvent" and ev["id"]
    assert ev["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
    ]
    assert ev["type"]["code"] == "rest"
    assert ev["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
    assert ev["action"] == "R" and ev["outcome"] == "0"
    assert ev["recorded"].endswith("Z")
    user, app = ev["agent"]
    assert user["requestor"] is True
    assert user["who"] == {
        "reference": "Practitioner/d1",
        "identifier": {"system": "urn:housecall:account", "value": "acct-7"},
    }
    assert {c["code"] for r in user["role"] for c in r["coding"]} == {"practitioner", "clinician"}
    assert user["network"] == {"address": "10.0.0.9", "type": "2"}
    assert user["policy"] == ["tok-123"]
    assert app["who"]["identifier"] == {"system": "urn:housecall:oauth-client", "value": "smart-app-1"}
    assert app["requestor"] is False
    assert ev["source"]["site"] == "org-a"
    assert _entity(ev, "1") == [{
        "what": {"reference": "Patient/p1"},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
    }]  # fmt: skip
    assert [e["what"]["reference"] for e in _entity(ev, "4")] == ["Observation/o1/_history/3"]


def test_backend_app_is_the_requestor_when_no_person_acts() -> None:
    app_actor = Actor(ActorKind.APP, "org-a", client_id="lab-feed", scopes=frozenset({"system/*.rs"}))
    ev = event_for(app_actor, AuditRequest("create", "Observation"), Outcome.SUCCESS, patient_id="p1")
    assert len(ev["agent"]) == 1
    (agent,) = ev["agent"]
    assert agent["requestor"] is True
    assert agent["who"]["identifier"]["value"] == "lab-feed"
    assert ev["action"] == "C"


def test_search_records_the_query_without_tokens_or_identifying_values() -> None:
    query = [
        ("name", CANARY), ("birthdate", "1970-01-01"), ("identifier", "ssn|123-45-6789"),
        ("subject.name:contains", CANARY), ("code", "http://loinc.org|8480-6"), ("patient", "Patient/p1"),
        ("_count", "10"), ("access_token", "secret-token-value"),
    ]  # fmt: skip
    ev = event_for(
        CLINICIAN, AuditRequest("search-type", "Observation", query=query), Outcome.SUCCESS, patient_id="p1"
    )
    assert ev["action"] == "E"
    (entity,) = _entity(ev, "24")
    recorded = base64.b64decode(entity["query"]).decode()
    raw = orjson.dumps(ev).decode()
    for secret in (CANARY, "1970-01-01", "123-45-6789", "secret-token-value", "access_token"):
        assert secret not in recorded and secret not in raw
    assert "code=http%3A%2F%2Floinc.org%7C8480-6" in recorded
    assert "patient=Patient%2Fp1" in recorded and "_count=10" in recorded and "name=%2A" in recorded


def test_redacted_query_keeps_control_parameters() -> None:
    assert redacted_query("Patient", [("_id", "p1"), ("family", "Smith")]) == "Patient?_id=p1&family=%2A"
    free_text = [("_content", "Smith"), ("_text", "Smith"), ("_filter", "name eq Smith"), ("_sort", "-date")]
    assert redacted_query("Patient", free_text) == "Patient?_content=%2A&_text=%2A&_filter=%2A&_sort=-date"
    assert "8480-6" in redacted_query("Patient", [("_has:Observation:patient:code", "8480-6")])


@pytest.mark.parametrize("secret", ["eyJhbGciOi.eyJzdWIiOi.sig", "x" * 80])
def test_a_token_that_reaches_the_actor_is_recorded_as_a_digest(secret: str) -> None:
    actor = Actor(ActorKind.PATIENT, "org-a", fhir_user="Patient/p1", session_id=secret)
    ev = event_for(actor, AuditRequest("read", "Patient", "p1"), Outcome.SUCCESS, patient_id="p1")
    assert secret not in orjson.dumps(ev).decode()
    assert ev["agent"][0]["policy"][0].startswith("sha256:")


def test_one_event_per_patient_and_one_without() -> None:
    request = AuditRequest("search-type", "Patient", query=[("name", "x")])
    entries = entries_for(CLINICIAN, request, Outcome.SUCCESS, patient_ids=["p1", "p2", "p1"])
    assert [e.patient_id for e in entries] == ["p1", "p2"]
    assert {e.agent for e in entries} == {"Practitioner/d1"} and {e.org_id for e in entries} == {"org-a"}
    (none,) = entries_for(CLINICIAN, AuditRequest("capabilities"), Outcome.SUCCESS)
    assert none.patient_id is None
    assert orjson.loads(none.event)["meta"]["profile"][0].endswith("IHE.BasicAudit.Read")


def test_denial_is_a_minor_failure_naming_what_was_asked() -> None:
    patient = Actor(ActorKind.PATIENT, "org-a", account_id="a1", fhir_user="Patient/p1", patient_id="p1")
    ev = event_for(patient, AuditRequest("read", "Observation", "foreign"), Outcome.MINOR_FAILURE,
                   action=Action.READ)  # fmt: skip
    assert ev["outcome"] == "4"
    assert [e["what"]["reference"] for e in _entity(ev, "4")] == ["Observation/foreign"]


def test_writes_denials_and_failures_are_urgent_successful_reads_are_not() -> None:
    def urgent(interaction: str, outcome: Outcome = Outcome.SUCCESS) -> bool:
        (entry,) = entries_for(
            CLINICIAN, AuditRequest(interaction, "Observation"), outcome, patient_ids=["p1"]
        )
        return entry.urgent

    assert not urgent("read") and not urgent("search-type") and not urgent("history-instance")
    assert not urgent("operation")  # $everything
    assert urgent("create") and urgent("update") and urgent("patch") and urgent("delete")
    assert urgent("transaction") and urgent("batch")
    assert urgent("read", Outcome.MINOR_FAILURE) and urgent("search-type", Outcome.SERIOUS_FAILURE)


def test_break_glass_access_names_its_purpose_on_the_requestor() -> None:
    ev = event_for(
        CLINICIAN, AuditRequest("read", "Patient", "p9"), Outcome.SUCCESS, patient_id="p9", purpose="ETREAT"
    )
    user, app = ev["agent"]
    assert user["purposeOfUse"] == [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}]}
    ]
    assert "purposeOfUse" not in app
    plain = event_for(CLINICIAN, AuditRequest("read", "Patient", "p9"), Outcome.SUCCESS, patient_id="p9")
    assert "purposeOfUse" not in plain["agent"][0]  # the cached agents were not changed
