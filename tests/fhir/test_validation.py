"""Tests for housecall.fhir.validation, with fhir.resources (R4B models) as the oracle.

Strategy
--------
* Every official HL7 R4 example, every resource of every Synthea bundle and of the bulk NDJSON
  files must get the same verdict from our validator and from
  ``fhir.resources.R4B.get_fhir_model_class(rt).model_validate`` (all valid, except
  ``Questionnaire-qs1.json``, which both reject; we must name the missing ``linkId``).
* A deterministic mutator breaks those resources in ~30 ways (unknown element, wrong JSON type,
  array vs single, missing required, bad formats, empty strings, two choice types, bad nested
  resourceType, null, bad references, ...).  Each variant carries a *prediction*: either the
  two validators agree (both reject) or a documented divergence id from ``DIVERGENCES`` (we
  reject, fhir.resources accepts).  The test asserts the prediction for every variant and, for
  every variant we reject, that an issue names the mutated location.
* ``R4_VS_R4B`` lists cases where R4 and R4B genuinely differ; R4 wins.
* The compiled table is cross-checked against fhirclient's models (generated from the official
  FHIR 4.0.1 definitions) because the definitions fixture is Medplum's packaging, which adds
  non-R4 content that the generator has to undo; and the committed table must be what the
  generator produces today.

Fixtures are read from ``$HOUSECALL_FIXTURES`` or ``<repo>/../shared/fixtures``; if neither
exists the tests fail (they never skip).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import inspect
import json
import os
import pkgutil
import random
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from housecall.fhir.validation import (
    RESOURCE_TYPES,
    Issue,
    is_known_resource_type,
    required_elements,
    validate_resource,
)
from housecall.fhir.validation._engine import (
    _SPECS,
    K_OBJECT,
    K_PEXT,
    K_PRIMITIVE,
    K_REFERENCE,
    K_RESOURCE,
    TABLES,
    _TypeSpec,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    """The shared fixtures folder; a missing folder fails the test loudly instead of skipping."""
    env = os.environ.get("HOUSECALL_FIXTURES")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"
    if not (path / "hl7-r4-examples").is_dir() or not (path / "synthea").is_dir():
        pytest.fail(f"FHIR fixtures not found at {path} (set HOUSECALL_FIXTURES)", pytrace=False)
    return path


@cache
def hl7_examples() -> dict[str, dict[str, Any]]:
    files = sorted((fixtures_dir() / "hl7-r4-examples").glob("*.json"))
    assert len(files) == 376, f"expected the 376 HL7 R4 examples, found {len(files)}"
    return {f.name: json.loads(f.read_text(encoding="utf-8")) for f in files}


@cache
def synthea_bundles() -> dict[str, dict[str, Any]]:
    files = sorted((fixtures_dir() / "synthea").glob("*.json"))
    assert len(files) == 30, f"expected the 30 Synthea bundles, found {len(files)}"
    return {f.name: json.loads(f.read_text(encoding="utf-8")) for f in files}


@cache
def ndjson_resources() -> list[dict[str, Any]]:
    out = []
    folder = fixtures_dir() / "synthea-bulk-ndjson-10-partial"
    # log.ndjson is the bulk-export job log, not FHIR resources.
    for f in sorted(folder.glob("*.ndjson")):
        if f.name == "log.ndjson":
            continue
        out += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(out) >= 200
    return out


def oracle_accepts(resource: dict[str, Any], resource_type: str) -> bool:
    """fhir.resources' verdict.  Any exception is a rejection: for an unknown nested
    resourceType it raises KeyError/TypeError instead of a ValidationError."""
    try:
        get_fhir_model_class(resource_type).model_validate(resource)
    except Exception:
        return False
    return True


def paths(issues: list[Issue]) -> list[str]:
    return [i.path for i in issues]


def names_location(issues: list[Issue], expected: str) -> bool:
    """An issue is at ``expected`` or inside it (``expected.x`` / ``expected[0]``)."""
    return any(p == expected or p.startswith((expected + ".", expected + "[")) for p in paths(issues))


# ----------------------------------------------------------------------------------------------
# API surface
# ----------------------------------------------------------------------------------------------
def test_api_surface() -> None:
    assert len(RESOURCE_TYPES) == 146  # R4 4.0.1 concrete resource types
    assert {"Patient", "Observation", "Bundle", "Binary", "Parameters", "MedicinalProduct"} <= RESOURCE_TYPES
    assert is_known_resource_type("Patient")
    for name in ("DomainResource", "Resource", "patient", "Coding", "SubscriptionStatus", "Citation", ""):
        assert not is_known_resource_type(name), name
    issue = Issue("Patient.gender", "x", "value")
    with pytest.raises(FrozenInstanceError):
        issue.path = "y"  # type: ignore[misc]
    assert not hasattr(issue, "__dict__")  # slots


def test_required_elements() -> None:
    assert required_elements("Observation") == {"status", "code"}
    assert required_elements("MedicationRequest") == {
        "status",
        "intent",
        "subject",
        "medicationCodeableConcept",
        "medicationReference",
    }
    assert required_elements("Questionnaire.item") == {"linkId", "type"}
    assert required_elements("Patient") == frozenset()
    assert required_elements("Nope") == frozenset()


TYPICAL_OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "subject": {"reference": "Patient/abc"},
    "effectiveDateTime": "2024-05-01T09:00:00+00:00",
    "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
}


def obs(**changes: Any) -> dict[str, Any]:
    o = json.loads(json.dumps(TYPICAL_OBSERVATION))
    o.update(changes)
    return o


def test_typical_observation_is_valid() -> None:
    assert validate_resource(TYPICAL_OBSERVATION) == []
    assert validate_resource(TYPICAL_OBSERVATION, "Observation") == []
    assert oracle_accepts(TYPICAL_OBSERVATION, "Observation")


@pytest.mark.parametrize(
    ("resource", "expected_type", "path", "code"),
    [
        ([], None, "Resource", "structure"),
        ("Patient", "Patient", "Patient", "structure"),
        ({}, None, "Resource.resourceType", "required"),
        ({"resourceType": "Nope"}, None, "Resource.resourceType", "invalid"),
        ({"resourceType": "DomainResource"}, None, "Resource.resourceType", "invalid"),
        ({"resourceType": 5}, "Patient", "Patient.resourceType", "invalid"),
        (obs(), "Patient", "Observation.resourceType", "invalid"),
        (obs(bogus=1), None, "Observation.bogus", "structure"),
        (obs(status=3), None, "Observation.status", "structure"),
        (obs(status=" final"), None, "Observation.status", "value"),
        (obs(status=["final"]), None, "Observation.status", "structure"),
        (obs(category={"text": "x"}), None, "Observation.category", "structure"),
        (obs(code=[{"text": "x"}]), None, "Observation.code", "structure"),
        (obs(effectiveDateTime="2024-05-01T09:00:00"), None, "Observation.effectiveDateTime", "value"),
        (obs(effectiveDateTime="2023-02-29"), None, "Observation.effectiveDateTime", "value"),
        (obs(issued="2024-05-01"), None, "Observation.issued", "value"),
        (obs(valueString="x"), None, "Observation.valueString", "structure"),
        (obs(subject={"reference": "Patient/a b"}), None, "Observation.subject.reference", "value"),
        (obs(subject="Patient/abc"), None, "Observation.subject", "structure"),
        (obs(_status={}), None, "Observation._status", "structure"),
        (
            obs(_status={"extension": [{"valueCode": "x"}]}),
            None,
            "Observation._status.extension[0].url",
            "required",
        ),
        (obs(_code={"id": "x"}), None, "Observation._code", "structure"),
        (obs(id="x" * 65), None, "Observation.id", "value"),
        (obs(text={"status": "generated", "div": "plain"}), None, "Observation.text.div", "value"),
        (obs(text={"status": "generated"}), None, "Observation.text.div", "required"),
        (
            obs(contained=[{"resourceType": "Patient", "gender": 1}]),
            None,
            "Observation.contained[0].gender",
            "structure",
        ),
        (obs(contained=[{"id": "p"}]), None, "Observation.contained[0].resourceType", "required"),
        (obs(extension=[{"url": "http://x"}]), None, "Observation.extension[0]", "invariant"),
        (obs(component=[{"valueString": "x"}]), None, "Observation.component[0].code", "required"),
        (obs(valueQuantity={"value": "120"}), None, "Observation.valueQuantity.value", "structure"),
        (obs(valueQuantity={"value": 1e400}), None, "Observation.valueQuantity.value", "value"),
        (obs(note=[None]), None, "Observation.note[0]", "structure"),
        (obs(meta={"profile": []}), None, "Observation.meta.profile", "structure"),
    ],
)
def test_issue_paths_and_codes(resource: Any, expected_type: str | None, path: str, code: str) -> None:
    issues = validate_resource(resource, expected_type)
    assert issues, "expected a problem"
    assert any(i.path == path and i.code == code for i in issues), issues
    assert all(i.message and " " in i.message for i in issues)


def test_required_choice_and_nested_paths() -> None:
    med = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/1"},
    }
    assert paths(validate_resource(med)) == ["MedicationRequest.medication[x]"]
    med["medicationCodeableConcept"] = {"text": "aspirin"}
    assert validate_resource(med) == []
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": med}, {"resource": {"resourceType": "Patient", "birthDate": "1970-02-30"}}],
    }
    assert paths(validate_resource(bundle)) == ["Bundle.entry[1].resource.birthDate"]
    q = {
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [
            {
                "linkId": "1",
                "type": "group",
                "item": [{"linkId": "1.1", "type": "string"}, {"type": "string"}],
            }
        ],
    }
    assert paths(validate_resource(q)) == ["Questionnaire.item[0].item[1].linkId"]
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "r", "resource": {"resourceType": "Nope"}}],
    }
    assert paths(validate_resource(params)) == ["Parameters.parameter[0].resource.resourceType"]


def test_primitive_extensions_and_null_slots() -> None:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"given": ["A", None], "_given": [None, {"id": "x"}]}],
    }
    assert validate_resource(patient) == []
    patient["name"][0]["_given"] = [None, None]
    # slot 1 is null in both arrays; slot 0 has a value, so its null extension is fine
    assert paths(validate_resource(patient)) == ["Patient.name[0].given[1]", "Patient.name[0]._given[1]"]
    patient["name"][0] = {"given": ["A"], "_given": [None, {"id": "x"}]}
    assert "Patient.name[0]._given" in paths(validate_resource(patient))
    # a required primitive may be replaced by an extension explaining its absence
    ext = {
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
        ]
    }
    o = obs(_status=ext)
    del o["status"]
    assert validate_resource(o) == []
    o["_status"] = {"id": "only-an-id"}
    assert paths(validate_resource(o)) == ["Observation.status"]
    assert validate_resource(obs(fhir_comments=["a", "b"], code={"text": "x", "fhir_comments": "c"})) == []
    assert paths(validate_resource(obs(fhir_comments=1))) == ["Observation.fhir_comments"]


def test_deep_nesting_is_reported_not_raised() -> None:
    ext: dict[str, Any] = {"url": "http://x", "valueString": "x"}
    for _ in range(5000):
        ext = {"url": "http://x", "extension": [ext]}
    issues = validate_resource(obs(extension=[ext]))
    assert [(i.path, i.code) for i in issues] == [("Observation", "too-costly")]
    # a realistic depth is fine
    shallow: dict[str, Any] = {"url": "http://x", "valueString": "x"}
    for _ in range(100):
        shallow = {"url": "http://x", "extension": [shallow]}
    assert validate_resource(obs(extension=[shallow])) == []


@pytest.mark.parametrize(
    "ref",
    [
        "Patient/abc",
        "Patient/abc/_history/2",
        "#",
        "#p1",
        "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7",
        "urn:oid:1.2.3.4",
        "http://example.org/fhir/Patient/23",
        "https://fhir.example.org/Patient/1",
        "Patient?identifier=http://x|123",
    ],
)
def test_reference_shapes_accepted(ref: str) -> None:
    assert validate_resource(obs(subject={"reference": ref})) == []


@pytest.mark.parametrize(
    "ref",
    [
        "not a reference",
        "Patinet/123",
        "Patient/",
        "Patient/a_b",
        "Patient",
        "urn:uuid:123",
        "Patient/1 ",
        "#a b",
        "/Patient/1",
    ],
)
def test_reference_shapes_rejected(ref: str) -> None:
    assert paths(validate_resource(obs(subject={"reference": ref}))) == ["Observation.subject.reference"]


@pytest.mark.parametrize(
    ("fhir_type", "good", "bad"),
    [
        (
            "Date",
            ["2024", "2024-02", "2024-02-29", "2000-02-29", "0001-01-01"],
            ["2023-02-29", "1900-02-29", "2024-04-31", "2024-1-01", "24-01-01", "2024-01-01T00:00:00Z"],
        ),
        (
            "DateTime",
            [
                "2024",
                "2024-05-01T09:00:00Z",
                "2016-12-31T23:59:60Z",
                "2024-05-01T09:00:00.123456789-13:59",
                "2024-05-01T09:00:00+14:00",
            ],
            [
                "2024-05-01T09:00Z",
                "2024-05-01T24:00:00Z",
                "2024-05-01T09:00:00+14:01",
                "2024-05-01 09:00:00Z",
                "2024-05-01\n",
            ],
        ),
        (
            "Instant",
            ["2024-05-01T09:00:00.1Z", "2024-05-01T09:00:00+01:00"],
            ["2024-05-01", "2024-05-01T09:00:00", "2024-02-30T09:00:00Z"],
        ),
        ("Time", ["00:00:00", "23:59:60", "12:30:00.5"], ["24:00:00", "12:30", "12:30:00Z"]),
        ("Integer", [0, -(2**31), 2**31 - 1], [2**31, 1.0, "1", True]),
        ("PositiveInt", [1], [0, -1]),
        ("UnsignedInt", [0], [-1]),
        ("Decimal", [0, -1.5, 1e-7, 10**30, 1e300], ["1.5", True, float("nan")]),
        ("Boolean", [True, False], ["true", 1, 0, None]),
        ("Code", ["a", "a b", "mm[Hg]"], ["", " a", "a ", "a  b", "a\tb\n"]),
        ("Id", ["a", "A-1.b", "x" * 64], ["", "x" * 65, "a_b", "a b"]),
        ("Oid", ["urn:oid:1.2.3"], ["1.2.3", "urn:oid:3.1", "urn:oid:1.02"]),
        (
            "Uuid",
            ["urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7"],
            ["53fefa32-fcbb-4ff8-8a92-55ee120877b7", "urn:uuid:53FEFA32-FCBB-4FF8-8A92-55EE120877B7"],
        ),
        ("Uri", ["http://x", "urn:x", "a"], ["", "a b", "a\tb"]),
        (
            "Base64Binary",
            ["AAAA", "AA==", "AAAA\nBBBB", " AAAA "],
            ["", "AAA", "AA AA", "AAAA!", "not base64!"],
        ),
        ("String", ["x", "   ", "\u00a0"], ["", 5]),
        ("Markdown", ["# x"], [""]),
    ],
)
def test_primitive_formats(fhir_type: str, good: list[Any], bad: list[Any]) -> None:
    def ext(value: Any) -> dict[str, Any]:
        return obs(extension=[{"url": "http://example.org/x", "value" + fhir_type: value}])

    for v in good:
        assert validate_resource(ext(v)) == [], v
    for v in bad:
        assert paths(validate_resource(ext(v))) == [f"Observation.extension[0].value{fhir_type}"], v


def test_string_limits_and_simple_quantity() -> None:
    big = "x" * (1024 * 1024 + 1)
    issues = validate_resource(obs(code={"text": big}))
    assert [(i.path, i.code) for i in issues] == [("Observation.code.text", "too-long")]
    dose = {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/1"},
        "dosage": [{"doseAndRate": [{"doseQuantity": {"value": 1, "comparator": "<"}}]}],
    }
    assert paths(validate_resource(dose)) == [
        "MedicationStatement.dosage[0].doseAndRate[0].doseQuantity.comparator"
    ]


# ----------------------------------------------------------------------------------------------
# Real-world corpora: verdicts identical to fhir.resources
# ----------------------------------------------------------------------------------------------
def test_hl7_examples_match_oracle() -> None:
    mismatches = []
    for name, res in hl7_examples().items():
        ours = validate_resource(res)
        theirs = oracle_accepts(res, res["resourceType"])
        if (not ours) != theirs or (name == "Questionnaire-qs1.json") == theirs:
            mismatches.append((name, theirs, ours[:3]))
    assert mismatches == []


def test_questionnaire_qs1_names_missing_link_id() -> None:
    issues = validate_resource(hl7_examples()["Questionnaire-qs1.json"])
    assert issues
    assert all(i.code == "required" and i.path.endswith(".linkId") for i in issues), issues
    assert "Questionnaire.item[0].item[0].linkId" in paths(issues)
    assert issues[0].message == "missing required element 'linkId'"


def test_synthea_bundles_match_oracle() -> None:
    mismatches: list[tuple[Any, ...]] = []
    count = 0
    for name, bundle in synthea_bundles().items():
        if validate_resource(bundle, "Bundle"):
            mismatches.append((name, validate_resource(bundle)[:3]))
        for i, entry in enumerate(bundle["entry"]):
            res = entry["resource"]
            count += 1
            ours = validate_resource(res)
            if ours or not oracle_accepts(res, res["resourceType"]):
                mismatches.append((name, i, res["resourceType"], ours[:3]))
    assert count > 9000
    assert mismatches == []


def test_bulk_ndjson_matches_oracle() -> None:
    mismatches = []
    for res in ndjson_resources():
        ours = validate_resource(res)
        if ours or not oracle_accepts(res, res["resourceType"]):
            mismatches.append((res["resourceType"], res.get("id"), ours[:3]))
    assert mismatches == []


# ----------------------------------------------------------------------------------------------
# Documented differences from fhir.resources
# ----------------------------------------------------------------------------------------------
# Each entry: why we reject what fhir.resources (8.3.0, R4B models, pydantic lax mode) accepts.
# The R4 rule wins in every case; the brief asks for these checks explicitly.
DIVERGENCES: dict[str, str] = {
    "lax-scalar": (
        "R4 JSON (json.html) represents boolean as true/false, integer/decimal as JSON numbers "
        "and date/time types as strings; pydantic's lax mode coerces 'true', 0/1, '7', 7.0 and "
        "Unix timestamps"
    ),
    "null": (
        "R4 JSON forbids null except as a placeholder in a primitive array whose _name array has "
        "content at that index; fhir.resources treats null as absent (even for a required "
        "complex element such as Observation.code)"
    ),
    "empty-object-or-array": (
        "R4 JSON forbids empty objects and arrays (ele-1: an element has a value or children); "
        "fhir.resources builds an empty model / empty list"
    ),
    "empty-uri-markdown-base64": (
        "R4 JSON forbids empty strings for every primitive; fhir.resources' uri/url/canonical/"
        "markdown patterns match '' and base64 decodes '' to b''"
    ),
    "uri-whitespace": (
        "R4 uri/url/canonical regex is \\S* (anchored, XML-Schema style); fhir.resources applies "
        "it unanchored, so any string passes"
    ),
    "id-length": "R4 id regex is [A-Za-z0-9\\-\\.]{1,64}; fhir.resources allows up to 255 characters",
    "xhtml": "Narrative.div must be an XHTML <div> element; fhir.resources accepts any string",
    "root-resource-type": (
        "a resource must carry resourceType; the oracle is called as Model.model_validate, which "
        "does not need it"
    ),
    "contained-resource-type": (
        "every contained/entry resource needs a concrete resourceType; fhir.resources validates a "
        "typeless one as the abstract Resource (accepting it when it has only id/meta/...)"
    ),
    "json-text-complex": (
        "a complex element must be a JSON object; fhir.resources parses a string holding JSON text"
    ),
    "reference-shape": (
        "Reference.reference must be a literal reference (references.html); fhir.resources accepts "
        "any non-empty string"
    ),
    "ext-1": (
        "invariant ext-1: an extension has a value[x] or nested extensions, not both and not "
        "neither; fhir.resources checks no invariants"
    ),
    "primitive-array-alignment": (
        "R4 JSON: a primitive array and its _name array have the same length; not checked by fhir.resources"
    ),
    "simple-quantity": (
        "SimpleQuantity (e.g. Dosage.doseAndRate.doseQuantity) has comparator 0..0 in R4; "
        "fhir.resources types these elements as plain Quantity"
    ),
    "string-length": "string.value has maxLength 1048576 in R4; not checked by fhir.resources",
    "base64-junk": (
        "R4 base64Binary regex allows only base64 characters and whitespace; fhir.resources uses "
        "base64.b64decode, which silently drops other characters"
    ),
    "uuid": (
        "R4 uuid is urn:uuid: + lowercase hex of any version; fhir.resources requires a version-4 "
        "UUID and accepts it without the urn:uuid: prefix"
    ),
    "resource-type-in-datatype": (
        "resourceType is not an element of datatypes; fhir.resources ignores it when it equals "
        "the datatype's name"
    ),
}

# Where R4 and R4B genuinely differ; R4 (our verdict) wins.  (resource, resource type to ask
# fhir.resources for, our verdict, reason)
R4_VS_R4B: list[tuple[dict[str, Any], str, bool, str]] = [
    (
        obs(extension=[{"url": "http://x", "valueMeta": {"versionId": "1"}}]),
        "Observation",
        True,
        "Extension.valueMeta exists in R4 (Meta is an open type there) but not in R4B",
    ),
    (
        obs(extension=[{"url": "http://x", "valueRatioRange": {"lowNumerator": {"value": 1}}}]),
        "Observation",
        False,
        "RatioRange (and Extension.valueRatioRange) is new in R4B",
    ),
    (
        obs(extension=[{"url": "http://x", "valueCodeableReference": {"concept": {"text": "x"}}}]),
        "Observation",
        False,
        "CodeableReference is new in R4B",
    ),
    (
        {"resourceType": "ActivityDefinition", "status": "draft", "subjectCanonical": "http://x"},
        "ActivityDefinition",
        False,
        "ActivityDefinition.subject[x] gained canonical in R4B",
    ),
    (
        {
            "resourceType": "Evidence",
            "status": "draft",
            "exposureBackground": {"reference": "EvidenceVariable/1"},
        },
        "Evidence",
        True,
        "Evidence was redesigned in R4B (exposureBackground is R4 only)",
    ),
]

# Minimal cases for each divergence: (divergence id, resource); we reject, fhir.resources accepts.
DIVERGENCE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("lax-scalar", obs(code={"coding": [{"code": "x", "userSelected": "true"}]})),
    ("lax-scalar", obs(valueQuantity={"value": "120"})),
    ("lax-scalar", obs(effectiveDateTime=1714554000)),
    ("null", obs(issued=None)),
    ("null", obs(code=None)),
    ("null", {"resourceType": "Patient", "name": [{"given": [None]}]}),
    ("empty-object-or-array", obs(code={})),
    ("empty-object-or-array", obs(category=[])),
    ("empty-uri-markdown-base64", obs(code={"coding": [{"system": ""}]})),
    ("uri-whitespace", obs(code={"coding": [{"system": "http://loinc org"}]})),
    ("id-length", obs(id="x" * 65)),
    ("xhtml", obs(text={"status": "generated", "div": "plain text"})),
    ("root-resource-type", {k: v for k, v in obs().items() if k != "resourceType"}),
    ("contained-resource-type", obs(contained=[{"id": "p1"}])),
    ("contained-resource-type", obs(contained=[{"resourceType": "DomainResource", "id": "p1"}])),
    ("json-text-complex", obs(code='{"text": "x"}')),
    ("reference-shape", obs(subject={"reference": "not a reference"})),
    ("ext-1", obs(extension=[{"url": "http://x"}])),
    (
        "ext-1",
        obs(
            extension=[
                {"url": "http://x", "valueString": "a", "extension": [{"url": "y", "valueString": "b"}]}
            ]
        ),
    ),
    (
        "primitive-array-alignment",
        {"resourceType": "Patient", "name": [{"given": ["a", "b"], "_given": [{"id": "x"}]}]},
    ),
    (
        "simple-quantity",
        {
            "resourceType": "MedicationStatement",
            "status": "active",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/1"},
            "dosage": [{"doseAndRate": [{"doseQuantity": {"value": 1, "comparator": "<"}}]}],
        },
    ),
    ("string-length", obs(code={"text": "x" * (1024 * 1024 + 1)})),
    ("base64-junk", obs(extension=[{"url": "http://x", "valueBase64Binary": "AAAA$"}])),
    ("uuid", obs(extension=[{"url": "http://x", "valueUuid": "53fefa32-fcbb-4ff8-8a92-55ee120877b7"}])),
    ("resource-type-in-datatype", obs(code={"resourceType": "CodeableConcept", "text": "x"})),
]


@pytest.mark.parametrize(("divergence", "resource"), DIVERGENCE_CASES, ids=[d for d, _ in DIVERGENCE_CASES])
def test_documented_divergences(divergence: str, resource: dict[str, Any]) -> None:
    assert divergence in DIVERGENCES
    assert validate_resource(resource, "Observation" if divergence == "root-resource-type" else None)
    rt = resource.get("resourceType", "Observation")
    assert oracle_accepts(resource, rt), f"fhir.resources now rejects this; drop the {divergence!r} note"


def test_uuid_divergence_both_ways() -> None:
    # the other half of the "uuid" note: a valid R4 uuid that is not version 4
    v1 = obs(extension=[{"url": "http://x", "valueUuid": "urn:uuid:c232e1e0-0a3a-11ee-be56-0242ac120002"}])
    assert validate_resource(v1) == []
    assert not oracle_accepts(v1, "Observation")


@pytest.mark.parametrize(("resource", "rt", "r4_valid", "reason"), R4_VS_R4B, ids=[r for *_, r in R4_VS_R4B])
def test_r4_wins_over_r4b(resource: dict[str, Any], rt: str, r4_valid: bool, reason: str) -> None:
    assert (validate_resource(resource) == []) is r4_valid, reason
    assert oracle_accepts(resource, rt) is not r4_valid, reason


def test_required_bindings_are_not_checked_like_fhir_resources() -> None:
    """Observation.status has a required binding (registered|preliminary|final|...), but
    fhir.resources does not enforce bindings, so neither do we: the verdicts must match."""
    bogus = obs(status="bogus")
    assert validate_resource(bogus) == []
    assert oracle_accepts(bogus, "Observation")


def test_r4_only_and_r4b_only_resource_types() -> None:
    # MedicinalProduct was replaced by MedicinalProductDefinition in R4B; Citation is R4B-only.
    assert validate_resource({"resourceType": "MedicinalProduct", "name": [{"productName": "x"}]}) == []
    assert paths(validate_resource({"resourceType": "Citation", "status": "draft"})) == [
        "Resource.resourceType"
    ]
    assert oracle_accepts({"resourceType": "Citation", "status": "draft"}, "Citation")


# ----------------------------------------------------------------------------------------------
# The mutation corpus
# ----------------------------------------------------------------------------------------------
AGREE = "agree"  # both validators reject

# A wrong-JSON-type replacement per FHIR type that fhir.resources also rejects (its lax
# coercions are covered by the "lax-scalar" kind instead).
WRONG_TYPE: dict[str, Any] = {
    **dict.fromkeys(
        (
            "string",
            "code",
            "id",
            "uri",
            "url",
            "canonical",
            "markdown",
            "oid",
            "uuid",
            "base64Binary",
            "xhtml",
        ),
        42,
    ),
    "boolean": 42,
    **dict.fromkeys(("date", "dateTime", "instant", "time"), True),
    **dict.fromkeys(("decimal", "integer", "positiveInt", "unsignedInt"), "abc"),
}
# JSON values fhir.resources coerces but R4 JSON forbids.
LAX_VALUE: dict[str, Any] = {
    "boolean": "true",
    "integer": "7",
    "positiveInt": 7.0,
    "unsignedInt": True,
    "decimal": "7.5",
    "date": 0,
    "dateTime": 1714554000,
    "instant": 1714554000,
    "time": 3600,
}
# Malformed values for each primitive type; both validators reject them.
BAD_FORMAT: dict[str, list[Any]] = {
    "date": ["2023-02-29", "2024-13-01", "01/05/2024"],
    "dateTime": ["2024-05-01T09:00:00", "2024-02-30", "2024-05-01T09:00Z"],
    "instant": ["2024-05-01", "2024-05-01T09:00:00"],
    "time": ["25:00:00", "9:00"],
    "id": ["bad id!", "a_b"],
    "code": [" leading", "two  spaces", "trailing "],
    "oid": ["1.2.3"],
    "uuid": ["not-a-uuid"],
    "positiveInt": [0],
    "unsignedInt": [-1],
    "integer": [2**31],
    "decimal": [float("inf")],
    "base64Binary": ["not base64!"],
}
# Sample values used to add a second choice-type variant.
SAMPLE: dict[str, Any] = {
    **dict.fromkeys(("string", "code", "id", "markdown"), "x"),
    **dict.fromkeys(("uri", "url", "canonical"), "http://example.org/x"),
    "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7",
    "base64Binary": "AAAA",
    "boolean": True,
    **dict.fromkeys(("integer", "positiveInt", "unsignedInt"), 1),
    "decimal": 1.5,
    "date": "2020-01-01",
    "dateTime": "2020-01-01",
    "instant": "2020-01-01T00:00:00Z",
    "time": "10:00:00",
}
COMPLEX_SAMPLE = {"extension": [{"url": "http://example.org/x", "valueString": "x"}]}
BASE_RESOURCE_FIELDS = {"id", "meta", "implicitRules", "language", "resourceType"}


@dataclass(frozen=True)
class Site:
    """One JSON property of a base resource, with what the table says about it."""

    at: tuple[str | int, ...]  # JSON path of the object holding the property
    key: str
    kind: int
    fhir_type: str
    repeats: bool
    group: str | None
    owner: _TypeSpec


@dataclass
class Variant:
    name: str
    kind: str
    resource: dict[str, Any]
    resource_type: str
    location: str  # where an issue must be reported
    expect: str  # AGREE or a DIVERGENCES id


def render_path(root: str, at: tuple[str | int, ...]) -> str:
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at)


def get_at(node: Any, at: tuple[str | int, ...]) -> Any:
    for p in at:
        node = node[p]
    return node


def collect(res: dict[str, Any]) -> tuple[list[Site], list[tuple[tuple[str | int, ...], _TypeSpec]]]:
    """All property sites and all object nodes of a resource, walking the compiled table."""
    sites: list[Site] = []
    objects: list[tuple[tuple[str | int, ...], _TypeSpec]] = []

    def walk(node: dict[str, Any], spec: _TypeSpec, at: tuple[str | int, ...]) -> None:
        objects.append((at, spec))
        for key, val in node.items():
            f = spec.fields.get(key)
            if f is None:
                continue
            mode, sub, group = f
            kind, repeats = mode >> 1, bool(mode & 1)
            sites.append(Site(at, key, kind, sub, repeats, group, spec))
            items = list(enumerate(val)) if repeats else [(None, val)]
            for i, v in items:
                child = (*at, key) if i is None else (*at, key, i)
                if kind == K_OBJECT and isinstance(v, dict):
                    walk(v, _SPECS[sub], child)
                elif kind == K_RESOURCE and isinstance(v, dict):
                    walk(v, _SPECS[v["resourceType"]], child)

    walk(res, _SPECS[res["resourceType"]], ())
    return sites, objects


def value_paths(site: Site, res: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """JSON paths of the individual values of a site (array items separately)."""
    base = (*site.at, site.key)
    val = get_at(res, base)
    if site.repeats and isinstance(val, list):
        return [(*base, i) for i, v in enumerate(val) if v is not None]
    return [base]


def mutations(
    res: dict[str, Any], rng: random.Random
) -> Iterator[tuple[str, Callable[[dict[str, Any]], None], tuple[str | int, ...], str]]:
    """Yield (kind, mutate-in-place, location, expectation) for one base resource.

    Sites are sampled with ``rng`` so the corpus is deterministic and varied; each kind is
    applied to at most one or two sites per base resource.
    """
    sites, objects = collect(res)
    prims = [s for s in sites if s.kind >= K_PRIMITIVE]
    complexes = [s for s in sites if s.kind == K_OBJECT]

    def pick(seq: list[Any], n: int = 1) -> list[Any]:
        return rng.sample(seq, min(n, len(seq)))

    def setter(at: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
        def f(r: dict[str, Any]) -> None:
            get_at(r, at[:-1])[at[-1]] = copy.deepcopy(value)  # no sharing between variants

        return f

    def deleter(at: tuple[str | int, ...], *keys: str) -> Callable[[dict[str, Any]], None]:
        def f(r: dict[str, Any]) -> None:
            node = get_at(r, at)
            for k in keys:
                node.pop(k, None)

        return f

    for at, _spec in pick(objects, 2):
        yield "unknown-element", setter((*at, "unknownElement"), "x"), (*at, "unknownElement"), AGREE
    for at, _spec in pick(objects):
        yield (
            "unknown-primitive-extension",
            setter((*at, "_unknownElement"), {"id": "x"}),
            (*at, "_unknownElement"),
            AGREE,
        )
    for s in pick(prims, 2):
        for vp in pick(value_paths(s, res)):
            t = "string" if s.kind == K_REFERENCE else s.fhir_type
            yield f"wrong-json-type:{t}", setter(vp, WRONG_TYPE[t]), vp, AGREE
    for s in pick([s for s in prims if s.fhir_type in LAX_VALUE]):
        for vp in pick(value_paths(s, res)):
            yield f"lax-scalar:{s.fhir_type}", setter(vp, LAX_VALUE[s.fhir_type]), vp, "lax-scalar"
    for s in pick(complexes, 2):
        for vp in pick(value_paths(s, res)):
            yield "wrong-json-type:complex", setter(vp, rng.choice([42, True, "text"])), vp, AGREE
    for s in pick([s for s in sites if not s.repeats and s.kind != K_PEXT], 2):
        vp = (*s.at, s.key)
        yield "single-as-array", setter(vp, [get_at(res, vp)]), vp, AGREE
    for s in pick([s for s in sites if s.repeats and s.kind != K_PEXT], 2):
        vp = (*s.at, s.key)
        first = get_at(res, vp)[0]
        if first is not None:
            yield "array-as-single", setter(vp, first), vp, AGREE
    for at, spec in pick([(a, sp) for a, sp in objects if sp.required or sp.required_groups], 2):
        node = get_at(res, at)
        present = [n for n, _ in spec.required if n in node]
        groups = [(g, [n for n in names if n in node]) for g, names in spec.required_groups]
        groups = [(g, names) for g, names in groups if names]
        if present and (not groups or rng.random() < 0.5):
            name = rng.choice(present)
            yield "missing-required", deleter(at, name, "_" + name), (*at, name), AGREE
        elif groups:
            g, names = rng.choice(groups)
            yield (
                "missing-required-choice",
                deleter(at, *names, *("_" + n for n in names)),
                (*at, f"{g}[x]"),
                AGREE,
            )
    for s in pick([s for s in prims if s.fhir_type in BAD_FORMAT], 2):
        for vp in pick(value_paths(s, res)):
            yield f"bad-format:{s.fhir_type}", setter(vp, rng.choice(BAD_FORMAT[s.fhir_type])), vp, AGREE
    lenient = {"uri", "url", "canonical", "markdown", "base64Binary"}
    for s in pick(
        [
            s
            for s in prims
            if s.fhir_type not in ("boolean", "integer", "positiveInt", "unsignedInt", "decimal")
        ],
        2,
    ):
        for vp in pick(value_paths(s, res)):
            t = s.fhir_type
            expect = "empty-uri-markdown-base64" if t in lenient else "xhtml" if t == "xhtml" else AGREE
            yield f"empty-string:{t}", setter(vp, ""), vp, expect
    for s in pick([s for s in prims if s.fhir_type in ("uri", "url", "canonical")]):
        for vp in pick(value_paths(s, res)):
            yield (
                f"uri-whitespace:{s.fhir_type}",
                setter(vp, "http://example.org/has space"),
                vp,
                "uri-whitespace",
            )
    for s in pick([s for s in sites if s.group is not None], 2):
        others = [k for k, f in s.owner.fields.items() if f[2] == s.group and k != s.key]
        if others:
            other = rng.choice(others)
            ftype = s.owner.fields[other][1]
            value = SAMPLE.get(ftype, COMPLEX_SAMPLE)
            yield "two-choice-types", setter((*s.at, other), value), (*s.at, other), AGREE
    for s in pick([s for s in sites if s.kind == K_RESOURCE], 2):
        for vp in pick(value_paths(s, res)):
            bad = rng.choice(["NotAResource", "Coding", "Patient_"])
            yield "bad-nested-resourceType", setter((*vp, "resourceType"), bad), (*vp, "resourceType"), AGREE
            nested = get_at(res, vp)
            expect = "contained-resource-type" if set(nested) <= BASE_RESOURCE_FIELDS else AGREE
            yield (
                "nested-resource-without-resourceType",
                deleter(vp, "resourceType"),
                (*vp, "resourceType"),
                expect,
            )
    for s in pick([s for s in prims if not s.repeats and (s.key, True) in s.owner.required]):
        vp = (*s.at, s.key)
        yield "null-required-primitive", setter(vp, None), vp, AGREE
    for s in pick(
        [s for s in sites if not s.repeats and s.kind != K_PEXT and (s.key, True) not in s.owner.required]
    ):
        vp = (*s.at, s.key)
        # fhir.resources treats null as absent: that is only an error when the element is a
        # required primitive (above) or the only member present of a required choice group.
        in_required_choice = s.group is not None and any(g == s.group for g, _ in s.owner.required_groups)
        yield "null-single", setter(vp, None), vp, AGREE if in_required_choice else "null"
    for s in pick([s for s in sites if s.repeats and s.kind in (K_OBJECT, K_RESOURCE)]):
        vp = (*s.at, s.key, 0)
        yield "null-in-complex-array", setter(vp, None), vp, AGREE
    for s in pick([s for s in prims if s.repeats and ("_" + s.key) not in get_at(res, s.at)]):
        vp = (*s.at, s.key, 0)
        yield "null-in-primitive-array", setter(vp, None), vp, "null"
    refs = [s for s in sites if s.kind == K_REFERENCE]
    for s in pick(refs):
        vp = (*s.at, s.key)
        yield "reference-wrong-type", setter(vp, 42), vp, AGREE
        yield "reference-empty", setter(vp, ""), vp, AGREE
        bad = rng.choice(["not a reference", "Patinet/123", "Patient/", "Patient/a_b"])
        yield "reference-malformed", setter(vp, bad), vp, "reference-shape"
        ref = get_at(res, vp)
        yield "reference-as-string", setter(s.at, ref), s.at, AGREE
    for s in pick(complexes):
        for vp in pick(value_paths(s, res)):
            spec = _SPECS[s.fhir_type]
            expect = AGREE if spec.required or spec.required_groups else "empty-object-or-array"
            yield "empty-object", setter(vp, {}), vp, expect
            yield "json-text-for-complex", setter(vp, json.dumps(get_at(res, vp))), vp, "json-text-complex"
    for s in pick([s for s in sites if s.repeats and s.kind != K_PEXT]):
        vp = (*s.at, s.key)
        yield "empty-array", setter(vp, []), vp, "empty-object-or-array"
    exts = [s for s in complexes if s.fhir_type == "Extension"]
    for s in pick(exts):
        for vp in pick(value_paths(s, res)):
            ext = get_at(res, vp)
            yield "extension-without-url", deleter(vp, "url"), (*vp, "url"), AGREE
            values = [k for k in ext if k.startswith("value")]
            if values:
                yield "extension-without-value", deleter(vp, *values), vp, "ext-1"
    for s in pick([s for s in prims if not s.repeats]):
        at = s.at
        ext_key = "_" + s.key
        if ext_key not in get_at(res, at):
            yield "primitive-extension-empty", setter((*at, ext_key), {}), (*at, ext_key), AGREE
            yield (
                "primitive-extension-bad",
                setter((*at, ext_key), {"extension": [{"valueString": "x"}]}),
                (*at, ext_key, "extension", 0, "url"),
                AGREE,
            )
    for s in pick([s for s in prims if s.fhir_type == "id"]):
        vp = (*s.at, s.key)
        if not s.repeats:
            yield "id-too-long", setter(vp, "a" * 65), vp, "id-length"
    for s in pick([s for s in prims if s.fhir_type == "xhtml"]):
        vp = (*s.at, s.key)
        yield "xhtml-not-div", setter(vp, "just text"), vp, "xhtml"
    for s in pick([s for s in complexes if s.fhir_type == "SimpleQuantity"]):
        for vp in pick(value_paths(s, res)):
            yield (
                "simple-quantity-comparator",
                setter((*vp, "comparator"), "<"),
                (*vp, "comparator"),
                "simple-quantity",
            )
    if rng.random() < 0.1:
        yield (
            "root-without-resourceType",
            deleter((), "resourceType"),
            ("resourceType",),
            "root-resource-type",
        )


def base_resources() -> list[tuple[str, dict[str, Any]]]:
    """Mutation bases: small HL7 examples (all types) plus one Synthea resource of each type,
    skipping the few huge files to keep the oracle's time in check."""
    bases = [
        (name, res)
        for name, res in hl7_examples().items()
        if name != "Questionnaire-qs1.json" and len(json.dumps(res)) < 8_000
    ]
    seen: set[str] = set()
    for name, bundle in synthea_bundles().items():
        for i, entry in enumerate(bundle["entry"]):
            res = entry["resource"]
            if res["resourceType"] not in seen:
                seen.add(res["resourceType"])
                bases.append((f"{name}#{i}", res))
    bundle = synthea_bundles()["Luigi_Wiegand_e27d88b0-c5e5-4042-ad49-184f6a900ee3.json"]
    small_bundle = {**bundle, "entry": bundle["entry"][:6]}
    bases.append(("synthea-bundle-head", small_bundle))
    for res in ndjson_resources()[::25]:
        bases.append((f"ndjson:{res['resourceType']}/{res['id']}", res))
    return bases


def build_corpus() -> list[Variant]:
    """The mutated variants, in a fixed order (seeded per base resource by its name)."""
    corpus = []
    for name, res in base_resources():
        text = json.dumps(res)
        rng = random.Random(zlib.crc32(name.encode()))
        rt = res["resourceType"]
        for kind, mutate, location, expect in mutations(res, rng):
            variant = json.loads(text)
            mutate(variant)
            corpus.append(Variant(name, kind, variant, rt, render_path(rt, location), expect))
    return corpus


@cache
def cached_corpus() -> list[Variant]:
    return build_corpus()


def test_mutation_corpus_verdicts_match_oracle() -> None:
    corpus = cached_corpus()
    kinds = Counter(v.kind.split(":")[0] for v in corpus)
    types = {v.resource_type for v in corpus}
    assert len(corpus) >= 3000, len(corpus)
    assert len(types) >= 40, sorted(types)
    assert all(n >= 8 for n in kinds.values()), kinds
    assert {v.expect for v in corpus} - {AGREE} <= set(DIVERGENCES)

    failures = []
    for v in corpus:
        ours = validate_resource(v.resource, None if v.expect != "root-resource-type" else v.resource_type)
        theirs = oracle_accepts(v.resource, v.resource_type)
        expected_theirs = v.expect != AGREE
        if not ours or theirs != expected_theirs or not names_location(ours, v.location):
            failures.append(
                f"{v.name} {v.kind} at {v.location}: ours={paths(ours)[:4]} oracle_accepts={theirs} "
                f"expected={v.expect}"
            )
    assert failures == [], f"{len(failures)} of {len(corpus)} variants:\n" + "\n".join(failures[:40])


def corpus_digest(corpus: list[Variant]) -> str:
    h = hashlib.sha256()
    for v in corpus:
        h.update(f"{v.name}|{v.kind}|{v.location}|{v.expect}|".encode())
        h.update(json.dumps(v.resource, sort_keys=True).encode())
    return h.hexdigest()


def test_mutation_corpus_is_deterministic() -> None:
    """Same corpus in a fresh interpreter with another hash seed (set iteration order differs)."""
    code = (
        "from tests.fhir.test_validation import build_corpus, corpus_digest\n"
        "print(corpus_digest(build_corpus()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "HOUSECALL_FIXTURES": str(fixtures_dir())}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == corpus_digest(cached_corpus())


# ----------------------------------------------------------------------------------------------
# The compiled table
# ----------------------------------------------------------------------------------------------
def _merged_fields(type_name: str) -> dict[str, list[Any]]:
    spec = TABLES["types"][type_name]
    out = _merged_fields(spec["base"]) if spec["base"] else {}
    out.update(spec["fields"])
    return out


def test_table_matches_fhirclient_r4_models() -> None:
    """fhirclient's models are generated from the official FHIR 4.0.1 definitions; the table
    must agree on every element name, repetition, requiredness and choice group, which proves
    the generator removed all of Medplum's additions to the definitions fixture."""
    import fhirclient.models as fc_models
    from fhirclient.models import fhirreference

    classes: dict[str, type] = {}
    for mod_info in pkgutil.iter_modules(fc_models.__path__):
        mod = importlib.import_module(f"fhirclient.models.{mod_info.name}")
        for cname, cls in inspect.getmembers(mod, inspect.isclass):
            if hasattr(cls, "elementProperties") and cls.__module__ == mod.__name__:
                classes[cname] = cls

    differences: list[tuple[Any, ...]] = []
    seen: set[tuple[str, Any]] = set()

    def compare(type_name: str, cls: Any) -> None:
        if (type_name, cls) in seen:
            return
        seen.add((type_name, cls))
        theirs = {p[1]: p for p in cls.elementProperties(cls.__new__(cls))}
        mine = _merged_fields(type_name)
        for name in sorted(set(theirs) | set(mine)):
            if name not in mine or name not in theirs:
                differences.append(
                    (type_name, name, "only in " + ("fhirclient" if name in theirs else "table"))
                )
                continue
            _, _, py_type, is_list, of_many, not_optional = theirs[name]
            fhir_type, many, required, group, _ = mine[name]
            if (bool(many), bool(required), group) != (is_list, not_optional, of_many):
                differences.append((type_name, name, mine[name], theirs[name][3:]))
            if (
                fhir_type in TABLES["types"]
                and fhir_type != "Resource"
                and py_type is not fhirreference.FHIRReference
            ):
                compare(fhir_type, py_type)

    from fhirclient.models.resource import Resource as FcResource

    fc_resource_types = {
        name
        for name, cls in classes.items()
        if issubclass(cls, FcResource) and getattr(cls, "resource_type", None) == name
    } - {"Resource", "DomainResource"}
    assert fc_resource_types == RESOURCE_TYPES
    for rt in TABLES["resource_types"]:
        compare(rt, classes[rt])
    # SimpleQuantity is a profile fhirclient does not model; its comparator is 0..0 in R4.
    assert differences == [("SimpleQuantity", "comparator", "only in fhirclient")]


def test_generated_table_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_validation_tables", REPO_ROOT / "tools" / "gen_validation_tables.py"
    )
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.render(gen.build(fixtures_dir() / "fhir-r4-definitions"))
    committed = (REPO_ROOT / "src" / "housecall" / "fhir" / "validation" / "_r4_tables.json").read_text(
        encoding="utf-8"
    )
    assert text == committed, "re-run tools/gen_validation_tables.py and commit the result"


def test_package_reads_only_its_own_table_at_run_time() -> None:
    """Importing and using the validator must not open the definitions (or any data file but
    the generated ``_r4_tables.json``).  Checked with an audit hook in a fresh interpreter, so
    modules already imported by this test session do not hide an ``open``."""
    code = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == 'open' else None)\n"
        "from housecall.fhir.validation import validate_resource\n"
        "assert validate_resource({'resourceType': 'Patient', 'gender': 'male'}) == []\n"
        "bad = [p for p in opened if not p.endswith(('.py', '.pyc', '/_r4_tables.json')) and\n"
        "       '__pycache__' not in p and\n"
        "       not p.startswith(sys.base_prefix) and 'site-packages' not in p and '/proc/' not in p]\n"
        "bad += [p for p in opened if 'shared' in p or 'fhir-r4-definitions' in p]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "HOUSECALL_FIXTURES": "/nonexistent"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
